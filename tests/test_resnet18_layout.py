"""resnet18's layout converters (``cases/resnet18/layout.py``): each pair is inverse, and the
channels-last kernel and activation compute the same convolution as the canonical ones; the
wrong transposition a port makes (numpy's ``.T`` of an OIHW kernel, WHIO) computes another."""

from __future__ import annotations

import numpy as np
import pytest

from cases.resnet18 import layout
from equiv.reference import layers


def conv_channels_last(x: np.ndarray, kernel: np.ndarray, stride: int, padding: int):
    """A plain NHWC x HWIO convolution, kernel offset by kernel offset."""
    kh, kw, _, cout = kernel.shape
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    n, h, w, _ = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    out = np.zeros((n, ho, wo, cout))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * ho : stride, j : j + stride * wo : stride, :]
            out += patch @ kernel[i, j]
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_every_converter_pair_is_inverse(rng):
    kernel = rng.standard_normal((8, 3, 7, 5))
    x = rng.standard_normal((2, 3, 6, 4))
    dense = rng.standard_normal((10, 512))
    assert np.array_equal(
        layout.kernel_to_canonical(layout.kernel_to_channels_last(kernel)), kernel
    )
    assert np.array_equal(layout.activation_to_canonical(layout.activation_to_channels_last(x)), x)
    assert np.array_equal(layout.dense_to_canonical(layout.dense_to_channels_last(dense)), dense)
    for name, value in (("conv1.weight", kernel), ("fc.weight", dense), ("bn1.bias", x[0, 0, 0])):
        there = layout.param_to_channels_last(name, value)
        assert np.array_equal(layout.param_to_canonical(name, there), value)
    assert layout.kernel_to_channels_last(kernel).shape == (7, 5, 3, 8)  # HWIO
    assert layout.activation_to_channels_last(x).shape == (2, 6, 4, 3)  # NHWC
    pooled = rng.standard_normal((2, 512))
    assert layout.activation_to_channels_last(pooled) is pooled  # (N, features) as it is


@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 3), (2, 0)])
def test_channels_last_computes_the_canonical_convolution(rng, stride, padding):
    x = rng.standard_normal((2, 3, 9, 9))
    kernel = rng.standard_normal((4, 3, 3, 3))
    canonical, _ = layers.conv2d(x, kernel, stride, padding)
    last = conv_channels_last(
        layout.activation_to_channels_last(x),
        layout.kernel_to_channels_last(kernel),
        stride,
        padding,
    )
    np.testing.assert_allclose(layout.activation_to_canonical(last), canonical, rtol=1e-12)


def test_a_kernel_transposed_with_numpys_T_is_another_convolution(rng):
    """OIHW.T is WHIO: the right shape for a square kernel, the wrong convolution (the
    ``keras-resnet-kernel-transposed`` mutant)."""
    x = rng.standard_normal((1, 4, 8, 8))
    kernel = rng.standard_normal((4, 4, 3, 3))
    canonical, _ = layers.conv2d(x, kernel, 1, 1)
    wrong = conv_channels_last(layout.activation_to_channels_last(x), kernel.T, 1, 1)
    assert kernel.T.shape == layout.kernel_to_channels_last(kernel).shape
    assert np.max(np.abs(layout.activation_to_canonical(wrong) - canonical)) > 0.1
