"""The attention's layouts as the ports declare them (equiv's standard layouts), without any
framework: each framework's arrays hold the canonical numbers where that framework reads them
(a wrong split, transpose or head order fails here)."""

import numpy as np
from equiv import layouts
from equiv.case import get_case

from equiv_transformer import layout


def canonical_params() -> dict[str, np.ndarray]:
    return get_case("transformer_block").make_state(0, "float64").params


def attention(p, heads, framework):
    """The port's attention layout (bias-free) under the case's names, and its arrays from p."""
    make = {
        "torch": layouts.torch_multihead_attention,
        "keras": layouts.keras_multi_head_attention,
    }[framework]
    d = p["wq"].shape[0]
    layout = make(d, heads, bias=False)
    return layout, layout.to_framework({n: p[n] for n in layout.canonical})


def test_the_attention_is_bias_free():
    """No q/k/v/o bias in the layout (the key bias's gradient is identically zero: spec notes);
    LayerNorm and the MLP keep theirs."""
    assert not {"bq", "bk", "bv", "bo"} & set(layout.PARAM_NAMES)
    assert {"ln1_beta", "ln2_beta", "b1", "b2"} <= set(layout.PARAM_NAMES)
    assert tuple(canonical_params()) == layout.PARAM_NAMES


def test_torch_in_proj_packs_q_k_v_as_out_in_blocks():
    p = canonical_params()
    _, torch_side = attention(p, 2, "torch")
    weight = torch_side["in_proj_weight"]
    d = p["wq"].shape[0]
    assert weight.shape == (3 * d, d)
    h = np.random.default_rng(0).standard_normal((5, d))
    # torch computes h @ in_proj_weight.T (bias=False), then chunks q, k, v in that order
    packed = h @ weight.T
    for i, n in enumerate("qkv"):
        want = h @ p[f"w{n}"]
        np.testing.assert_allclose(packed[:, i * d : (i + 1) * d], want, rtol=1e-12, atol=1e-14)


def test_both_layouts_round_trip_bit_for_bit():
    p = canonical_params()
    for framework in ("torch", "keras"):
        layout, native = attention(p, 2, framework)
        back = layout.to_canonical(native)
        assert all(back[n].tobytes() == p[n].tobytes() for n in layout.canonical)


def test_keras_projection_puts_head_i_at_columns_i_head_dim():
    p, heads = canonical_params(), 2
    kernel = attention(p, heads, "keras")[1]["query/kernel"]
    d = p["wq"].shape[0]
    hd = d // heads
    assert kernel.shape == (d, heads, hd)
    h = np.random.default_rng(1).standard_normal((3, d))
    # Keras's query EinsumDense: "abc,cde->abde" over (B, T, d): per head, h @ kernel[:, i]
    for i in range(heads):
        want = h @ p["wq"][:, i * hd : (i + 1) * hd]
        np.testing.assert_allclose(h @ kernel[:, i], want, rtol=1e-12, atol=1e-14)


def test_keras_output_sums_heads_in_the_canonical_order():
    p, heads = canonical_params(), 2
    kernel = attention(p, heads, "keras")[1]["attention_output/kernel"]
    d = p["wo"].shape[0]
    hd = d // heads
    per_head = np.random.default_rng(2).standard_normal((3, heads, hd))
    # Keras's output EinsumDense "abcd,cde->abe": sum over heads and head_dim
    got = np.einsum("tnh,nhe->te", per_head, kernel)
    want = per_head.reshape(3, d) @ p["wo"]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
