"""The canonical parameter layout of the transformer block, and its converters per framework.

Canonical (what ``spec.draw`` makes, the reference computes with and every trainer records):

    ln1_gamma, ln1_beta     (d,)        LayerNorm before attention
    wq, wk, wv              (d, d)      (in, out): q = h @ wq; head i is columns
                                          i * head_dim to (i + 1) * head_dim
    wo                      (d, d)      output projection, rows ordered as the heads' columns
    ln2_gamma, ln2_beta     (d,)        LayerNorm before the MLP
    w1, b1                  (d, mlp), (mlp,)
    w2, b2                  (mlp, d), (d,)

The attention projections have no biases (``spec.py``'s notes say why: the key bias's gradient is
identically zero). Kernels are (in, out), as equiv's canonical layout and a Keras ``Dense`` have
them. Each port says how its framework holds them with equiv's standard layouts
(``equiv.layouts``, renamed to these names with ``Layout.named``): torch's
``nn.MultiheadAttention`` packs q, k, v into ``in_proj_weight`` (``torch_multihead_attention``),
Keras's ``MultiHeadAttention`` holds ``EinsumDense`` kernels (d, heads, head_dim)
(``keras_multi_head_attention``); the JAX port is written over the canonical dict as it is.
"""

from __future__ import annotations

PARAM_NAMES = (
    "ln1_gamma",
    "ln1_beta",
    "wq",
    "wk",
    "wv",
    "wo",
    "ln2_gamma",
    "ln2_beta",
    "w1",
    "b1",
    "w2",
    "b2",
)
