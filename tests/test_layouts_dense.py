"""Linear / Dense layouts: round trips, and the same canonical weights loaded through the torch
layout into ``nn.Linear`` and through the Keras layout into ``Dense`` compute the same output,
which a kernel left untransposed does not."""

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
from equiv.layouts import LayoutError, copy

LAYOUTS = [L.torch_linear, L.keras_dense, L.flax_dense]


@pytest.mark.parametrize("make", LAYOUTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("bias", [True, False])
def test_round_trip_is_bit_exact(make, bias):
    assert_round_trips(make(3, 5, bias))


def test_torch_holds_the_transposed_kernel():
    params = draw(L.torch_linear(3, 5))
    assert np.array_equal(L.torch_linear(3, 5).to_framework(params)["weight"], params["kernel"].T)
    assert np.array_equal(L.keras_dense(3, 5).to_framework(params)["kernel"], params["kernel"])


def test_an_untransposed_kernel_fails_on_shape_when_not_square():
    with pytest.raises(
        LayoutError, match=r"framework 'weight' is \(5, 3\), the rule makes \(3, 5\)"
    ):
        planted(L.torch_linear(3, 5), copy("kernel", "weight"))


def test_a_dropped_bias_fails_at_declaration():
    with pytest.raises(LayoutError, match="canonical 'bias' is mapped to no framework tensor"):
        L.Layout(
            "Linear without its bias",
            {"kernel": (3, 5), "bias": (5,)},
            {"weight": (5, 3)},
            (L.transpose("kernel", "weight", (1, 0)),),
        )


def _forward(layout_torch, layout_keras, params, x):
    torch, keras = torch_or_skip(), keras_or_skip()
    n_in, n_out = layout_torch.canonical["kernel"]
    linear = torch.nn.Linear(n_in, n_out, dtype=torch.float64)
    torch_load(linear, layout_torch, params)
    dense = keras.layers.Dense(n_out, dtype="float64")
    dense.build((None, n_in))
    keras_load(dense, layout_keras, params)
    with torch.no_grad():
        y_torch = linear(torch.from_numpy(x))
    return y_torch, dense(x)


def test_torch_and_keras_compute_the_same_and_the_canonical_map():
    params = draw(L.torch_linear(4, 4))
    x = np.random.default_rng(1).standard_normal((3, 4))
    y_torch, y_keras = _forward(L.torch_linear(4, 4), L.keras_dense(4, 4), params, x)
    assert_same(y_torch, y_keras)
    assert_same(y_torch, x @ params["kernel"] + params["bias"])


def test_a_square_untransposed_kernel_loads_and_computes_another_map():
    params = draw(L.torch_linear(4, 4))
    x = np.random.default_rng(1).standard_normal((3, 4))
    wrong = planted(L.torch_linear(4, 4), copy("kernel", "weight"))  # shapes agree: (4, 4)
    y_torch, y_keras = _forward(wrong, L.keras_dense(4, 4), params, x)
    assert_differs(y_torch, y_keras)
