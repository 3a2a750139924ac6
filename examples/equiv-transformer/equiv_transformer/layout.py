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
them. The frameworks store the attention differently, and the converters below (plain numpy, so that
they are tested without any framework) go both ways:

- torch ``nn.MultiheadAttention`` packs q, k, v into ``in_proj_weight`` (3d, d) with each block
  (out, in) (``bias=False``: no ``in_proj_bias``); ``out_proj`` is an ``nn.Linear`` ((out, in)
  weight, no bias). Its heads split the d outputs of each projection into contiguous blocks, as
  here.
- Keras ``MultiHeadAttention(use_bias=False)`` holds ``EinsumDense`` kernels (d, heads, head_dim)
  for q, k and v, and an output kernel (heads, head_dim, d): a reshape of the canonical arrays
  (C order puts head i at columns i*head_dim...).
- JAX: the canonical dict as it is (the port is written over it).
"""

from __future__ import annotations

import numpy as np

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
QKV = ("q", "k", "v")


def torch_in_proj(params: dict[str, np.ndarray]) -> np.ndarray:
    """Canonical wq, wk, wv -> torch's ``in_proj_weight`` (3d, d)."""
    return np.ascontiguousarray(np.concatenate([params[f"w{n}"].T for n in QKV], axis=0))


def from_torch_in_proj(weight: np.ndarray) -> dict[str, np.ndarray]:
    """torch's ``in_proj_weight`` (3d, d) -> canonical wq, wk, wv (its gradient converts the
    same way)."""
    return {
        f"w{n}": np.ascontiguousarray(w.T) for n, w in zip(QKV, np.split(weight, 3), strict=True)
    }


def keras_projection(kernel: np.ndarray, heads: int) -> np.ndarray:
    """Canonical (d, d) kernel of q, k or v -> Keras's (d, heads, head_dim)."""
    return kernel.reshape(kernel.shape[0], heads, -1)


def keras_output(kernel: np.ndarray, heads: int) -> np.ndarray:
    """Canonical (d, d) output kernel -> Keras's (heads, head_dim, d)."""
    return kernel.reshape(heads, -1, kernel.shape[1])


def from_keras(array: np.ndarray, canonical_shape: tuple[int, ...]) -> np.ndarray:
    """Any Keras attention array (a kernel or its gradient) -> its canonical shape: every
    Keras layout above is a C-order reshape of the canonical one."""
    return np.ascontiguousarray(array).reshape(canonical_shape)
