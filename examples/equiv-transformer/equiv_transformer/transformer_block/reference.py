"""Reference for the transformer block: a composition of ``equiv.layers`` blocks.

Forward in order, then each block's backward in reverse; the residual connections add their two
gradients. The attention's projections have no biases (the spec's notes say why); LayerNorm and the
MLP keep theirs. Heads are split by reshaping q, k and v (B, T, d) -> (B, heads, T, head_dim), the
canonical layout's contiguous column blocks. The config chooses LayerNorm's eps and the GELU form,
which is what the defaults case's explanations vary; the mask fill is torch's -inf (no row of a
causal mask is fully masked, so any large negative fill gives the same numbers)."""

from __future__ import annotations

import numpy as np
from equiv import layers
from equiv.numerics import EXACT


def split_heads(a: np.ndarray, heads: int) -> np.ndarray:
    """(B, T, d) -> (B, heads, T, d // heads)."""
    b, t, d = a.shape
    return a.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)


def merge_heads(a: np.ndarray) -> np.ndarray:
    """(B, heads, T, head_dim) -> (B, T, heads * head_dim), the inverse of ``split_heads``."""
    b, heads, t, hd = a.shape
    return a.transpose(0, 2, 1, 3).reshape(b, t, heads * hd)


def gelu(u: np.ndarray, cfg) -> tuple:
    """GELU as the config asks: exact or ``"tanh"``; ``gelu_inv_sqrt2: "float32"`` is the exact
    form with 1/sqrt(2) rounded to float32, as TensorFlow's ``tf.nn.gelu`` computes it for
    float64 (``0.5 * x * erfc(-x * math_ops.cast(0.7071067811865476, x.dtype))``: the Python
    float becomes a float32 tensor before the cast). With s = float32(1/sqrt 2) * sqrt 2 that
    is x * Phi(s x) = gelu(s x) / s, whose derivative gelu'(s x) is the block's backward as it
    stands."""
    if cfg.get("gelu_inv_sqrt2") != "float32":
        return layers.gelu(u, approximate=cfg["gelu"] == "tanh")
    s = float(np.float32(1 / np.sqrt(2))) * np.sqrt(2)
    g, back = layers.gelu(u * s)
    return g / s, back


def forward_backward(params, data, cfg, prev_loss=None, numerics=EXACT):
    p, x = params, data["x"]
    heads, eps = cfg["heads"], cfg["ln_eps"]
    causal = np.tril(np.ones((x.shape[1], x.shape[1]), dtype=bool))

    h1, ln1_back = layers.layer_norm(x, p["ln1_gamma"], p["ln1_beta"], eps)
    projections = {n: layers.dense(h1, p[f"w{n}"]) for n in "qkv"}
    q, k, v = (split_heads(projections[n][0], heads) for n in "qkv")
    attended, attention_back = layers.softmax_attention(q, k, v, causal)
    a, out_back = layers.dense(merge_heads(attended), p["wo"])
    x1 = x + a
    h2, ln2_back = layers.layer_norm(x1, p["ln2_gamma"], p["ln2_beta"], eps)
    u, dense1_back = layers.dense(h2, p["w1"], p["b1"])
    g, gelu_back = gelu(u, cfg)
    m, dense2_back = layers.dense(g, p["w2"], p["b2"])
    loss, loss_back = layers.mse(x1 + m, data["y"], cfg.get("loss_reduction", "mean"))

    grads: dict[str, np.ndarray] = {}
    g_out = loss_back(1.0)
    g_g, grads["w2"], grads["b2"] = dense2_back(g_out)
    g_h2, grads["w1"], grads["b1"] = dense1_back(gelu_back(g_g))
    g_x1, grads["ln2_gamma"], grads["ln2_beta"] = ln2_back(g_h2)
    g_x1 = g_x1 + g_out  # the MLP's residual
    g_attended, grads["wo"], _ = out_back(g_x1)
    g_qkv = attention_back(split_heads(g_attended, heads))
    g_h1 = np.zeros_like(h1)
    for n, g_n in zip("qkv", g_qkv, strict=True):
        g_in, grads[f"w{n}"], _ = projections[n][1](merge_heads(g_n))
        g_h1 = g_h1 + g_in
    _, grads["ln1_gamma"], grads["ln1_beta"] = ln1_back(g_h1)
    return loss, {n: grads[n] for n in p}, None
