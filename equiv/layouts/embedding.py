"""Embedding.

Canonical: ``embeddings`` (num_embeddings, dim): row i is token i's vector, as torch
(``nn.Embedding.weight``), Keras (``Embedding.embeddings``) and Flax (``linen.Embed``,
``params/embedding``) all hold it. The layouts differ only in name; a table loaded transposed
fails on shape unless it is square, where only a numerical check catches it.

Not converted, for a port to match by hand: torch's ``padding_idx`` (that row's gradient is
always zero) has no Keras counterpart (``mask_zero`` masks later layers, it does not zero the
gradient), and torch's ``max_norm`` renormalises rows in place during the forward pass.
"""

from __future__ import annotations

from equiv.layouts.core import Layout, copy


def _layout(name: str, target: str, num_embeddings: int, dim: int) -> Layout:
    shape = (num_embeddings, dim)
    return Layout(name, {"embeddings": shape}, {target: shape}, (copy("embeddings", target),))


def torch_embedding(num_embeddings: int, dim: int) -> Layout:
    """``torch.nn.Embedding(num_embeddings, dim)``: ``weight``."""
    return _layout(f"torch.nn.Embedding({num_embeddings}, {dim})", "weight", num_embeddings, dim)


def keras_embedding(num_embeddings: int, dim: int) -> Layout:
    """``keras.layers.Embedding(num_embeddings, dim)``: ``embeddings``."""
    return _layout(
        f"keras.layers.Embedding({num_embeddings}, {dim})", "embeddings", num_embeddings, dim
    )


def flax_embedding(num_embeddings: int, dim: int) -> Layout:
    """``flax.linen.Embed(num_embeddings, dim)``: ``params/embedding``."""
    return _layout(
        f"flax.linen.Embed({num_embeddings}, {dim})", "params/embedding", num_embeddings, dim
    )
