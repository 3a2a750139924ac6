"""Conv layouts and padding: round trips; the canonical (torch, OIHW) kernel loaded into
``nn.Conv1d/2d`` and, through the Keras layout (HWIO, NHWC data), into ``Conv1D/2D`` computes
the same output under the padding ``keras_padding`` advises; a kernel with its channel or
spatial axes swapped, and Keras's "same" at stride 2 where torch pads 1, do not."""

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

from cases.resnet18 import layout as resnet18_layout
from equiv import layouts as L
from equiv.layouts import LayoutError, keras_padding, keras_same_pads, torch_pads, transpose

LAYOUTS = [L.torch_conv, L.keras_conv, L.flax_conv]


@pytest.mark.parametrize("make", LAYOUTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((3, 4, 3), {}), ((4, 6, (3, 2)), {"groups": 2}), ((3, 4, 5), {"dims": 1, "bias": False})],
)
def test_round_trip_is_bit_exact(make, args, kwargs):
    assert_round_trips(make(*args, **kwargs))


def test_the_keras_kernel_is_resnet18s_channels_last_kernel():
    """The same conversion as ``cases/resnet18/layout.py``'s hand-written one."""
    layout = L.keras_conv(3, 4, (3, 2))
    params = draw(layout)
    expected = resnet18_layout.kernel_to_channels_last(params["kernel"])
    assert np.array_equal(layout.to_framework(params)["kernel"], expected)
    x = np.zeros((2, 3, 5, 6))
    assert np.array_equal(
        layout.inputs.to_framework(x), resnet18_layout.activation_to_channels_last(x)
    )


def test_a_groups_count_that_does_not_divide_is_an_error():
    with pytest.raises(LayoutError, match="2 groups do not divide"):
        L.keras_conv(3, 4, 3, groups=2)


def test_spatial_axes_swapped_fail_on_shape_for_a_non_square_kernel():
    with pytest.raises(LayoutError, match=r"framework 'kernel' is \(3, 2, 3, 4\)"):
        planted(L.keras_conv(3, 4, (3, 2)), transpose("kernel", "kernel", (3, 2, 1, 0)))


# -- padding: the rules ---------------------------------------------------------------------


def test_torch_pads():
    assert torch_pads(1, 3) == ((1, 1), (1, 1))
    assert torch_pads((1, 2), 3) == ((1, 1), (2, 2))
    assert torch_pads("valid", 3, dims=1) == ((0, 0),)
    assert torch_pads("same", 4) == ((1, 2), (1, 2))  # the odd zero at the end
    assert torch_pads("same", 3, dilation=2) == ((2, 2), (2, 2))
    with pytest.raises(LayoutError, match="stride other than 1"):
        torch_pads("same", 3, stride=2)


def test_keras_same_pads_puts_the_odd_zero_at_the_end():
    assert keras_same_pads(None, 3) == ((1, 1), (1, 1))
    assert keras_same_pads(8, 3, 2) == ((0, 1), (0, 1))  # resnet's stride-2 convs on TF
    assert keras_same_pads(7, 3, 2) == ((1, 1), (1, 1))
    assert keras_same_pads((8, 7), 3, 2) == ((0, 1), (1, 1))
    with pytest.raises(LayoutError, match="depends on the input size"):
        keras_same_pads(None, 3, 2)


def test_keras_padding_advice():
    assert keras_padding(0, 3) == L.KerasPadding("valid", None, "torch pads nothing")
    assert keras_padding(1, 3).padding == "same"
    assert keras_padding(1, 3, 2).explicit == ((1, 1), (1, 1))  # no input size: explicit
    assert keras_padding(1, 3, 2, input_size=7).padding == "same"
    advice = keras_padding(1, 3, 2, input_size=8)
    assert (advice.padding, advice.explicit) == ("valid", ((1, 1), (1, 1)))
    assert "(0, 1)" in advice.why
    assert keras_padding(2, 3).explicit == ((2, 2), (2, 2))  # more than "same" pads
    assert keras_padding("same", 4).padding == "same"


# -- the real layers ------------------------------------------------------------------------

CONFIGS = [
    # (dims, in, out, kernel, stride, padding, dilation, input size[, groups])
    (2, 3, 4, 3, 1, 1, 1, 6),
    (2, 4, 6, 3, 1, 1, 1, 5, 2),
    (2, 3, 4, 3, 2, 1, 1, 8),  # Keras's "same" pads (0, 1): explicit needed
    (2, 3, 4, 3, 2, 1, 1, 7),  # Keras's "same" pads (1, 1) here
    (2, 3, 4, (4, 3), 1, "same", 1, 6),
    (2, 3, 4, 3, 1, 2, 2, 7),
    (2, 3, 4, 3, 1, 2, 1, 5),
    (1, 3, 4, 5, 2, 2, 1, 9),
]


def _torch_conv(torch, dims, cin, cout, k, stride, padding, dilation, params, groups=1):
    cls = torch.nn.Conv1d if dims == 1 else torch.nn.Conv2d
    conv = cls(cin, cout, k, stride, padding, dilation, groups, dtype=torch.float64)
    torch_load(conv, L.torch_conv(cin, cout, k, dims=dims, groups=groups), params)
    return conv


def _keras_conv(keras, dims, cin, cout, k, stride, dilation, layout, params, padding, groups=1):
    cls = keras.layers.Conv1D if dims == 1 else keras.layers.Conv2D
    conv = cls(
        cout, k, stride, padding=padding, dilation_rate=dilation, groups=groups, dtype="float64"
    )
    conv.build((None, *([None] * dims), cin))
    keras_load(conv, layout, params)
    return conv


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_torch_and_keras_compute_the_same_under_the_advised_padding(config):
    torch, keras = torch_or_skip(), keras_or_skip()
    dims, cin, cout, k, stride, padding, dilation, n, *rest = config
    groups = rest[0] if rest else 1
    layout = L.keras_conv(cin, cout, k, dims=dims, groups=groups)
    params = draw(layout)
    x = np.random.default_rng(1).standard_normal((2, cin, *([n] * dims)))
    conv = _torch_conv(torch, dims, cin, cout, k, stride, padding, dilation, params, groups)
    with torch.no_grad():
        y_torch = conv(torch.from_numpy(x))
    advice = keras_padding(padding, k, stride, dilation, input_size=n, dims=dims)
    conv = _keras_conv(
        keras, dims, cin, cout, k, stride, dilation, layout, params, advice.padding, groups
    )
    data = layout.inputs.to_framework(x)
    if advice.explicit is not None:
        pad = advice.explicit[0] if dims == 1 else advice.explicit
        zeros = keras.layers.ZeroPadding1D if dims == 1 else keras.layers.ZeroPadding2D
        data = zeros(pad, dtype="float64")(data)
    y_keras = layout.outputs.to_canonical(np.asarray(conv(data)))
    assert_same(y_torch, y_keras)


def _pair(kernel_rule=None, padding="same", stride=1, n=6, cin=3, cout=3, k=3):
    """torch's output and Keras's, the Keras kernel loaded through ``kernel_rule`` if given."""
    torch, keras = torch_or_skip(), keras_or_skip()
    layout = L.keras_conv(cin, cout, k)
    params = draw(layout)
    x = np.random.default_rng(1).standard_normal((2, cin, n, n))
    with torch.no_grad():
        y_torch = _torch_conv(torch, 2, cin, cout, k, stride, 1, 1, params)(torch.from_numpy(x))
    wrong = planted(layout, kernel_rule) if kernel_rule else layout
    conv = _keras_conv(keras, 2, cin, cout, k, stride, 1, wrong, params, padding)
    return y_torch, layout.outputs.to_canonical(np.asarray(conv(layout.inputs.to_framework(x))))


def test_the_right_pair_agrees():
    assert_same(*_pair())


def test_channel_axes_swapped_load_and_compute_another_conv():
    """HWOI for HWIO: the same shape where in == out."""
    assert_differs(*_pair(transpose("kernel", "kernel", (2, 3, 0, 1))))


def test_spatial_axes_swapped_load_and_compute_another_conv_for_a_square_kernel():
    assert_differs(*_pair(transpose("kernel", "kernel", (3, 2, 1, 0))))


def test_keras_same_at_stride_2_is_not_torchs_padding_1():
    y_torch, y_keras = _pair(padding="same", stride=2, n=8)
    assert y_torch.shape == y_keras.shape  # the same size, other windows
    assert_differs(y_torch, y_keras)
