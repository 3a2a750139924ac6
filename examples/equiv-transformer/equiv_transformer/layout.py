"""The canonical parameter layout of the transformer block, and its converters per framework.

Canonical (what ``spec.draw`` makes, the reference computes with and every trainer records):

    ln1_gamma, ln1_beta     (d,)        LayerNorm before attention
    wq, wk, wv              (d, d)      (in, out): q = h @ wq + bq; head i is columns
    bq, bk, bv              (d,)          i * head_dim to (i + 1) * head_dim
    wo, bo                  (d, d), (d,)  output projection, rows ordered as the heads' columns
    ln2_gamma, ln2_beta     (d,)        LayerNorm before the MLP
    w1, b1                  (d, mlp), (mlp,)
    w2, b2                  (mlp, d), (d,)

Kernels are (in, out), as equiv's canonical layout and a Keras ``Dense`` have them. The
frameworks store the attention differently, and the converters below (plain numpy, so that they
are tested without any framework) go both ways:

- torch ``nn.MultiheadAttention`` packs q, k, v into ``in_proj_weight`` (3d, d) with each block
  (out, in), and ``in_proj_bias`` (3d,); ``out_proj`` is an ``nn.Linear`` ((out, in) weight).
  Its heads split the d outputs of each projection into contiguous blocks, as here.
- Keras ``MultiHeadAttention`` holds ``EinsumDense`` kernels (d, heads, head_dim) for q, k and v
  with biases (heads, head_dim), and an output kernel (heads, head_dim, d) with bias (d,): a
  reshape of the canonical arrays (C order puts head i at columns i*head_dim...).
- JAX: the canonical dict as it is (the port is written over it).
"""

from __future__ import annotations

import numpy as np

PARAM_NAMES = (
    "ln1_gamma",
    "ln1_beta",
    "wq",
    "bq",
    "wk",
    "bk",
    "wv",
    "bv",
    "wo",
    "bo",
    "ln2_gamma",
    "ln2_beta",
    "w1",
    "b1",
    "w2",
    "b2",
)
QKV = ("q", "k", "v")


def torch_in_proj(params: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Canonical wq, wk, wv, bq, bk, bv -> torch's ``in_proj_weight`` (3d, d), ``in_proj_bias``."""
    weight = np.concatenate([params[f"w{n}"].T for n in QKV], axis=0)
    bias = np.concatenate([params[f"b{n}"] for n in QKV])
    return np.ascontiguousarray(weight), bias


def from_torch_in_proj(weight: np.ndarray, bias: np.ndarray) -> dict[str, np.ndarray]:
    """torch's ``in_proj_weight`` (3d, d) and ``in_proj_bias`` (3d,) -> canonical arrays (their
    gradients convert the same way)."""
    out: dict[str, np.ndarray] = {}
    for n, w, b in zip(QKV, np.split(weight, 3), np.split(bias, 3), strict=True):
        out[f"w{n}"] = np.ascontiguousarray(w.T)
        out[f"b{n}"] = np.ascontiguousarray(b)
    return out


def keras_projection(kernel: np.ndarray, bias: np.ndarray, heads: int):
    """Canonical (d, d) kernel and (d,) bias of q, k or v -> Keras's (d, heads, head_dim) and
    (heads, head_dim)."""
    d = kernel.shape[0]
    return kernel.reshape(d, heads, -1), bias.reshape(heads, -1)


def keras_output(kernel: np.ndarray, heads: int) -> np.ndarray:
    """Canonical (d, d) output kernel -> Keras's (heads, head_dim, d)."""
    return kernel.reshape(heads, -1, kernel.shape[1])


def from_keras(array: np.ndarray, canonical_shape: tuple[int, ...]) -> np.ndarray:
    """Any Keras attention array (kernel, bias or their gradient) -> its canonical shape: every
    Keras layout above is a C-order reshape of the canonical one."""
    return np.ascontiguousarray(array).reshape(canonical_shape)
