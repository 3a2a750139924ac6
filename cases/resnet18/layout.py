"""Converters between resnet18's canonical layout (torchvision's: NCHW, OIHW, fc (out, in))
and the channels-last layout of TensorFlow, Keras and JAX's default (NHWC, HWIO, (in, out)).

Plain numpy on numpy arrays (and any array with ``.transpose``/``.T`` of the same meaning:
a framework tensor converts at its boundary with the framework's own transpose). Every
function has its inverse here, and ``tests/test_resnet18_layout.py`` holds each pair to
being inverse and to computing the same convolution.

Why each one matters (torch's Conv2d weight is (out, in, kH, kW) and its tensors NCHW; a
Keras Conv2D kernel is (kH, kW, in, out) and its tensors NHWC, the Keras default): a kernel
transposed the wrong way (OIHW read as HWIO after only swapping O and I, which is still a
valid shape for square kernels of equal channel counts) computes another convolution; an NCHW
flatten fed to an NHWC Dense permutes the Dense's input. ResNet-18's global average pool makes
the flatten (N, 512) in both layouts, so the Dense converts by ``dense_to_channels_last`` alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: OIHW (torch) -> HWIO (TF, Keras, JAX's "HWIO")
KERNEL_TO_CHANNELS_LAST = (2, 3, 1, 0)
#: HWIO -> OIHW
KERNEL_TO_CANONICAL = (3, 2, 0, 1)
#: NCHW -> NHWC
ACTIVATION_TO_CHANNELS_LAST = (0, 2, 3, 1)
#: NHWC -> NCHW
ACTIVATION_TO_CANONICAL = (0, 3, 1, 2)


def kernel_to_channels_last(kernel: Any) -> Any:
    """OIHW -> HWIO."""
    return np.transpose(kernel, KERNEL_TO_CHANNELS_LAST)


def kernel_to_canonical(kernel: Any) -> Any:
    """HWIO -> OIHW."""
    return np.transpose(kernel, KERNEL_TO_CANONICAL)


def activation_to_channels_last(x: Any) -> Any:
    """NCHW -> NHWC for a 4-d activation; a 2-d (N, features) one is the same in both."""
    return np.transpose(x, ACTIVATION_TO_CHANNELS_LAST) if np.ndim(x) == 4 else x


def activation_to_canonical(x: Any) -> Any:
    """NHWC -> NCHW for a 4-d activation; a 2-d (N, features) one is the same in both."""
    return np.transpose(x, ACTIVATION_TO_CANONICAL) if np.ndim(x) == 4 else x


def dense_to_channels_last(weight: Any) -> Any:
    """fc.weight (out, in) -> a Dense kernel (in, out)."""
    return np.transpose(weight)


def dense_to_canonical(kernel: Any) -> Any:
    """A Dense kernel (in, out) -> fc.weight (out, in)."""
    return np.transpose(kernel)


def param_to_channels_last(name: str, value: Any) -> Any:
    """Any canonical parameter to channels-last: kernels and fc.weight transpose, vectors
    (BatchNorm's gamma and beta, biases) stay."""
    if np.ndim(value) == 4:
        return kernel_to_channels_last(value)
    if name == "fc.weight":
        return dense_to_channels_last(value)
    return value


def param_to_canonical(name: str, value: Any) -> Any:
    """The inverse of ``param_to_channels_last``."""
    if np.ndim(value) == 4:
        return kernel_to_canonical(value)
    if name == "fc.weight":
        return dense_to_canonical(value)
    return value
