"""Conv1d / Conv2d / Conv3d.

Canonical: torch's, as ``cases/resnet18/layout.py`` has it: ``kernel`` (out, in / groups,
*kernel_size) (OIW, OIHW), ``bias`` (out,), activations channels first (NCW, NCHW). Keras
(``Conv1D``/``Conv2D``/``Conv3D``, channels_last, their default) and Flax (``linen.Conv``) hold
the kernel (*kernel_size, in / groups, out) (WIO, HWIO) and their activations channels last
(NWC, NHWC): the kernel's axes move, the data's channel axis moves to the end. A kernel whose
two channel axes are swapped but whose spatial axes are not (OIHW read as IOHW) has the right
shape when in == out, and only a numerical check catches it.

The padding is the other half of a conv port: ``equiv.layouts.padding``.
"""

from __future__ import annotations

from collections.abc import Sequence

from equiv.layouts.core import SAME, Layout, LayoutError, channels_last, copy, transpose


def _sizes(kernel_size: int | Sequence[int], dims: int) -> tuple[int, ...]:
    if isinstance(kernel_size, int):
        return (kernel_size,) * dims
    sizes = tuple(int(k) for k in kernel_size)
    if len(sizes) != dims:
        raise LayoutError(f"conv: kernel_size {sizes} for a {dims}-d conv")
    return sizes


def _canonical(
    in_channels: int, out_channels: int, k: tuple[int, ...], groups: int, bias: bool
) -> dict[str, tuple[int, ...]]:
    if in_channels % groups or out_channels % groups:
        raise LayoutError(
            f"conv: {groups} groups do not divide in={in_channels}, out={out_channels}"
        )
    shapes = {"kernel": (out_channels, in_channels // groups, *k)}
    if bias:
        shapes["bias"] = (out_channels,)
    return shapes


def _channels_last_axes(dims: int) -> tuple[int, ...]:
    """OI* -> *IO."""
    return (*range(2, dims + 2), 1, 0)


def torch_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    dims: int = 2,
    groups: int = 1,
    bias: bool = True,
) -> Layout:
    """``torch.nn.Conv{dims}d(in_channels, out_channels, kernel_size, groups=, bias=)``:
    ``weight`` and ``bias`` are the canonical arrays, activations NC*."""
    if not isinstance(kernel_size, int):
        dims = len(kernel_size)
    k = _sizes(kernel_size, dims)
    shapes = _canonical(in_channels, out_channels, k, groups, bias)
    rules = [copy("kernel", "weight")] + ([copy("bias", "bias")] if bias else [])
    return Layout(
        f"torch.nn.Conv{dims}d({in_channels}, {out_channels}, {k}, groups={groups}, bias={bias})",
        shapes,
        {"weight": shapes["kernel"], **({"bias": shapes["bias"]} if bias else {})},
        tuple(rules),
        inputs=SAME,
        outputs=SAME,
    )


def _channels_last(
    name: str,
    prefix: str,
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    dims: int,
    groups: int,
    bias: bool,
) -> Layout:
    if not isinstance(kernel_size, int):
        dims = len(kernel_size)
    k = _sizes(kernel_size, dims)
    shapes = _canonical(in_channels, out_channels, k, groups, bias)
    framework = {f"{prefix}kernel": (*k, in_channels // groups, out_channels)}
    rules = [transpose("kernel", f"{prefix}kernel", _channels_last_axes(dims))]
    if bias:
        framework[f"{prefix}bias"] = (out_channels,)
        rules.append(copy("bias", f"{prefix}bias"))
    data = channels_last(dims)
    return Layout(
        name.format(dims=dims, k=k), shapes, framework, tuple(rules), inputs=data, outputs=data
    )


def keras_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    dims: int = 2,
    groups: int = 1,
    bias: bool = True,
) -> Layout:
    """``keras.layers.Conv{dims}D(out_channels, kernel_size, groups=, use_bias=)``,
    channels_last: ``kernel`` (*k, in / groups, out), ``bias``; activations N*C."""
    return _channels_last(
        f"keras.layers.Conv{{dims}}D({out_channels}, {{k}}, groups={groups}, use_bias={bias})"
        f" on {in_channels} channels",
        "",
        in_channels,
        out_channels,
        kernel_size,
        dims,
        groups,
        bias,
    )


def flax_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    dims: int = 2,
    groups: int = 1,
    bias: bool = True,
) -> Layout:
    """``flax.linen.Conv(out_channels, kernel_size, feature_group_count=groups, use_bias=)``:
    ``params/kernel`` (*k, in / groups, out), ``params/bias``; activations N*C."""
    return _channels_last(
        f"flax.linen.Conv({out_channels}, {{k}}, feature_group_count={groups}, "
        f"use_bias={bias}) on {in_channels} channels",
        "params/",
        in_channels,
        out_channels,
        kernel_size,
        dims,
        groups,
        bias,
    )
