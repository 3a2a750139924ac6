"""Multi-head attention layouts: round trips; the conversions of
``examples/equiv-transformer/equiv_transformer/layout.py`` reproduced; torch's
``nn.MultiheadAttention`` and Keras's ``MultiHeadAttention`` loaded from the same canonical
weights compute the same attention as a numpy one written over the canonical form; q and k
swapped, the heads interleaved, a packed block left untransposed, each computes another."""

from __future__ import annotations

import numpy as np
import pytest
from test_layouts_frameworks import (
    assert_differs,
    assert_round_trips,
    assert_same,
    draw,
    keras_load,
    keras_or_skip,
    planted,
    torch_load,
    torch_or_skip,
)

from equiv import layouts as L
from equiv.layouts import copy, pack

#: head_dim 4: Keras on TensorFlow casts its 1 / sqrt(head_dim) scale through float32 (the
#: ``ops.cast`` of a Python float that ``cases/resnet18/spec.py`` notes for SGD's momentum),
#: exact only where 1 / sqrt(head_dim) is (1e-8 off at head_dim 3)
D, HEADS = 8, 2
HEAD_DIM = D // HEADS


@pytest.mark.parametrize(
    "make",
    [
        lambda: L.torch_multihead_attention(D, HEADS),
        lambda: L.torch_multihead_attention(D, HEADS, bias=False),
        lambda: L.torch_multihead_attention(D, HEADS, kdim=4, vdim=5),
        lambda: L.keras_multi_head_attention(D, HEADS),
        lambda: L.keras_multi_head_attention(D, HEADS, bias=False, kdim=4),
        lambda: L.flax_multi_head_attention(D, HEADS),
    ],
    ids=lambda f: f().name,
)
def test_round_trip_is_bit_exact(make):
    assert_round_trips(make())


def test_heads_that_do_not_divide_are_an_error():
    with pytest.raises(L.LayoutError, match="4 heads do not divide embed_dim 6"):
        L.keras_multi_head_attention(6, 4)


def test_kdim_vdim_shapes():
    layout = L.torch_multihead_attention(6, 3, kdim=4, vdim=5)
    assert layout.canonical["wk"] == (4, 6) and layout.framework["k_proj_weight"] == (6, 4)
    keras = L.keras_multi_head_attention(6, 3, kdim=4, vdim=5)
    assert keras.framework["value/kernel"] == (5, 3, 2)


# -- the real layers ------------------------------------------------------------------------


def softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention(p, q_in, k_in, v_in):
    """Attention over the canonical form: head i is columns i * head_dim... of q, k, v."""

    def heads(x):  # (N, L, D) -> (N, heads, L, head_dim)
        return x.reshape(*x.shape[:2], HEADS, HEAD_DIM).transpose(0, 2, 1, 3)

    q = heads(q_in @ p["wq"] + p["bq"])
    k = heads(k_in @ p["wk"] + p["bk"])
    v = heads(v_in @ p["wv"] + p["bv"])
    a = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(HEAD_DIM)) @ v
    return a.transpose(0, 2, 1, 3).reshape(*q_in.shape[:2], D) @ p["wo"] + p["bo"]


def _inputs(kdim=D, vdim=D):
    rng = np.random.default_rng(6)
    return (
        rng.standard_normal((2, 4, D)),
        rng.standard_normal((2, 5, kdim)),
        rng.standard_normal((2, 5, vdim)),
    )


def _pair(kdim=None, vdim=None, torch_layout=None, keras_layout=None):
    torch, keras = torch_or_skip(), keras_or_skip()
    right_torch = L.torch_multihead_attention(D, HEADS, kdim=kdim, vdim=vdim)
    params = draw(right_torch)
    q, k, v = _inputs(kdim or D, vdim or D)
    mha = torch.nn.MultiheadAttention(
        D, HEADS, kdim=kdim, vdim=vdim, batch_first=True, dtype=torch.float64
    )
    torch_load(mha, torch_layout or right_torch, params)
    mha.eval()
    with torch.no_grad():
        y_torch, _ = mha(*(torch.from_numpy(a) for a in (q, k, v)), need_weights=False)
    layer = keras.layers.MultiHeadAttention(HEADS, HEAD_DIM, dtype="float64")
    layer(q, v, key=k)  # builds
    keras_load(
        layer, keras_layout or L.keras_multi_head_attention(D, HEADS, kdim=kdim, vdim=vdim), params
    )
    return y_torch, layer(q, v, key=k), attention(params, q, k, v)


@pytest.mark.parametrize(("kdim", "vdim"), [(None, None), (4, 5)], ids=["packed", "kdim_vdim"])
def test_torch_keras_and_the_canonical_attention_agree(kdim, vdim):
    y_torch, y_keras, y_numpy = _pair(kdim, vdim)
    assert_same(y_torch, y_numpy)
    assert_same(y_keras, y_numpy)


def test_q_and_k_swapped_compute_another_attention():
    wrong = planted(
        L.torch_multihead_attention(D, HEADS),
        pack(
            ("wq", "wk", "wv"),
            "in_proj_weight",
            lambda q, k, v: np.concatenate([k.T, q.T, v.T]),
            lambda t: [np.split(t, 3)[i].T for i in (1, 0, 2)],
        ),
    )
    y_torch, _, y_numpy = _pair(torch_layout=wrong)
    assert_differs(y_torch, y_numpy)


def test_packed_blocks_left_untransposed_compute_another_attention():
    wrong = planted(
        L.torch_multihead_attention(D, HEADS),
        pack(
            ("wq", "wk", "wv"),
            "in_proj_weight",
            lambda q, k, v: np.concatenate([q, k, v]),
            lambda t: np.split(t, 3),
        ),
    )
    y_torch, _, y_numpy = _pair(torch_layout=wrong)
    assert_differs(y_torch, y_numpy)


def test_interleaved_heads_compute_another_attention():
    """Keras's (d, heads, head_dim) kernel made by reading columns as (head_dim, heads): head i
    gets columns i, i + heads, ... instead of a contiguous block."""

    def interleave(a):
        return a.reshape(a.shape[0], HEAD_DIM, HEADS).transpose(0, 2, 1)

    def back(t):
        return t.transpose(0, 2, 1).reshape(t.shape[0], D)

    wrong = planted(
        L.keras_multi_head_attention(D, HEADS),
        *(copy(f"w{n}", f"{layer}/kernel", interleave, back) for n, layer in (("q", "query"),)),
    )
    _, y_keras, y_numpy = _pair(keras_layout=wrong)
    assert_differs(y_keras, y_numpy)
