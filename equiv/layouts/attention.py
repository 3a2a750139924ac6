"""Multi-head attention.

Canonical (as ``examples/equiv-transformer/equiv_transformer/layout.py`` has it, whose
hand-written converters these layouts reproduce): ``wq`` (d, d), ``wk`` (kdim, d), ``wv``
(vdim, d) and ``wo`` (d, d), (in, out) kernels, so that q = query @ wq; head i is columns
i * head_dim to (i + 1) * head_dim of q, k and v, and rows of ``wo`` in the same order; with
``bias``, ``bq``, ``bk``, ``bv``, ``bo`` (d,). Scores are scaled by 1 / sqrt(head_dim) in all
three frameworks.

- torch ``nn.MultiheadAttention(d, heads, bias=, kdim=, vdim=)``: where kdim == vdim == d it
  packs q, k, v into ``in_proj_weight`` (3d, d), each block (out, in); otherwise it holds
  ``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight`` (d, d), (d, kdim), (d, vdim); the
  biases packed in ``in_proj_bias`` (3d,) either way; ``out_proj`` is a Linear. Heads split
  each projection's d outputs into contiguous blocks (torch.nn.MultiheadAttention docs, and
  its ``view(..., num_heads, head_dim)``), as here. ``add_bias_kv`` is not covered.
- Keras ``MultiHeadAttention(heads, key_dim=head_dim)``: ``EinsumDense`` kernels
  (in, heads, head_dim) for query, key and value with biases (heads, head_dim), and
  ``attention_output`` kernel (heads, head_dim, d) with bias (d,): C-order reshapes of the
  canonical arrays (keras/src/layers/attention/multi_head_attention.py).
- Flax ``linen.MultiHeadDotProductAttention(heads, qkv_features=d)``: the same shapes as
  Keras's, named ``query``, ``key``, ``value``, ``out``.
- JAX by hand: the canonical dict as it is.
"""

from __future__ import annotations

import numpy as np

from equiv.layouts.core import SAME, TIME_MAJOR, Layout, LayoutError, Rule, copy, pack, reshape

QKV = ("q", "k", "v")


def _dims(embed_dim: int, num_heads: int, kdim: int | None, vdim: int | None) -> tuple:
    if embed_dim % num_heads:
        raise LayoutError(f"attention: {num_heads} heads do not divide embed_dim {embed_dim}")
    return embed_dim // num_heads, kdim or embed_dim, vdim or embed_dim


def _canonical(d: int, kdim: int, vdim: int, bias: bool) -> dict:
    shapes = {"wq": (d, d), "wk": (kdim, d), "wv": (vdim, d), "wo": (d, d)}
    if bias:
        shapes |= {f"b{n}": (d,) for n in (*QKV, "o")}
    return shapes


def torch_multihead_attention(
    embed_dim: int,
    num_heads: int,
    bias: bool = True,
    kdim: int | None = None,
    vdim: int | None = None,
    batch_first: bool = True,
) -> Layout:
    """``torch.nn.MultiheadAttention(embed_dim, num_heads, bias=, kdim=, vdim=,
    batch_first=)``, its ``state_dict`` names and order."""
    d = embed_dim
    _, kdim, vdim = _dims(d, num_heads, kdim, vdim)
    packed = kdim == vdim == d
    framework: dict = {}
    rules: list[Rule] = []
    if packed:
        framework["in_proj_weight"] = (3 * d, d)
        rules.append(
            pack(
                ("wq", "wk", "wv"),
                "in_proj_weight",
                lambda q, k, v: np.concatenate([q.T, k.T, v.T], axis=0),
                lambda t: [w.T for w in np.split(t, 3)],
            )
        )
    else:
        for n, size in zip(QKV, (d, kdim, vdim), strict=True):
            framework[f"{n}_proj_weight"] = (d, size)
            rules.append(copy(f"w{n}", f"{n}_proj_weight", np.transpose, np.transpose))
    if bias:
        framework["in_proj_bias"] = (3 * d,)
        rules.append(
            pack(
                ("bq", "bk", "bv"),
                "in_proj_bias",
                lambda *b: np.concatenate(b),
                lambda t: np.split(t, 3),
            )
        )
    framework["out_proj.weight"] = (d, d)
    rules.append(copy("wo", "out_proj.weight", np.transpose, np.transpose))
    if bias:
        framework["out_proj.bias"] = (d,)
        rules.append(copy("bo", "out_proj.bias"))
    data = SAME if batch_first else TIME_MAJOR
    return Layout(
        f"torch.nn.MultiheadAttention({d}, {num_heads}, bias={bias}, kdim={kdim}, vdim={vdim})",
        _canonical(d, kdim, vdim, bias),
        framework,
        tuple(rules),
        inputs=data,
        outputs=data,
    )


def _einsum(
    name: str,
    names: tuple[str, str, str, str],
    prefix: str,
    embed_dim: int,
    num_heads: int,
    bias: bool,
    kdim: int | None,
    vdim: int | None,
) -> Layout:
    d = embed_dim
    head_dim, kdim, vdim = _dims(d, num_heads, kdim, vdim)
    framework: dict = {}
    rules: list[Rule] = []
    for n, size, layer in zip(QKV, (d, kdim, vdim), names[:3], strict=True):
        framework[f"{prefix}{layer}/kernel"] = (size, num_heads, head_dim)
        rules.append(
            reshape(f"w{n}", f"{prefix}{layer}/kernel", (size, num_heads, head_dim), (size, d))
        )
        if bias:
            framework[f"{prefix}{layer}/bias"] = (num_heads, head_dim)
            rules.append(reshape(f"b{n}", f"{prefix}{layer}/bias", (num_heads, head_dim), (d,)))
    out = names[3]
    framework[f"{prefix}{out}/kernel"] = (num_heads, head_dim, d)
    rules.append(reshape("wo", f"{prefix}{out}/kernel", (num_heads, head_dim, d), (d, d)))
    if bias:
        framework[f"{prefix}{out}/bias"] = (d,)
        rules.append(copy("bo", f"{prefix}{out}/bias"))
    return Layout(name, _canonical(d, kdim, vdim, bias), framework, tuple(rules))


def keras_multi_head_attention(
    embed_dim: int,
    num_heads: int,
    bias: bool = True,
    kdim: int | None = None,
    vdim: int | None = None,
) -> Layout:
    """``keras.layers.MultiHeadAttention(num_heads, key_dim=embed_dim // num_heads,
    use_bias=bias)`` called on a query of ``embed_dim`` features (a key of ``kdim``, a value of
    ``vdim``): ``query/kernel`` ... ``attention_output/bias``, in ``layer.weights`` order."""
    return _einsum(
        f"keras.layers.MultiHeadAttention({num_heads}, key_dim={embed_dim // num_heads}, "
        f"use_bias={bias}) on {embed_dim}",
        ("query", "key", "value", "attention_output"),
        "",
        embed_dim,
        num_heads,
        bias,
        kdim,
        vdim,
    )


def flax_multi_head_attention(
    embed_dim: int,
    num_heads: int,
    bias: bool = True,
    kdim: int | None = None,
    vdim: int | None = None,
) -> Layout:
    """``flax.linen.MultiHeadDotProductAttention(num_heads, qkv_features=embed_dim,
    use_bias=bias)``: ``params/query/kernel`` ... ``params/out/bias``."""
    return _einsum(
        f"flax.linen.MultiHeadDotProductAttention({num_heads}, qkv_features={embed_dim}, "
        f"use_bias={bias})",
        ("query", "key", "value", "out"),
        "params/",
        embed_dim,
        num_heads,
        bias,
        kdim,
        vdim,
    )
