"""What padding reproduces torch's convolution padding in Keras (and Flax).

torch's ``padding=p`` adds p zeros on *both* sides of each spatial axis (torch.nn.Conv2d docs;
``padding="same"``, stride 1 only, puts the odd one at the end). Keras has only ``"valid"``
and ``"same"``, and ``"same"`` follows TensorFlow's rule on every backend: the output is
ceil(n / stride) long and the total padding that needs, max((out - 1) * stride +
(k - 1) * dilation + 1 - n, 0), is split with the extra zero at the *end* (bottom/right)
(keras/src/backend/tensorflow/nn.py ``_pad_same_spatial_channels_last``, the same rule
emulated in keras/src/backend/torch/nn.py ``_compute_padding_length``).

So with stride 1 and an odd kernel, torch's p = (k - 1) / 2 is Keras's "same" exactly; with
stride 2 it is not: a 3x3 kernel at stride 2 on an even input gets one zero at the bottom and
right and none at the top and left in Keras, one on every side in torch. The output has the same
size and other values: every window is shifted by one. Explicit padding (``ZeroPadding2D``
then a ``"valid"`` conv) reproduces torch for every input size; ``keras_padding`` says which of
the two a port needs. Flax and ``jax.lax`` take the explicit (low, high) pairs directly:
``torch_pads``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from equiv.layouts.core import LayoutError

Pads = tuple[tuple[int, int], ...]


def _tuple(value: int | Sequence[int], dims: int, what: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    value = tuple(int(v) for v in value)
    if len(value) != dims:
        raise LayoutError(f"padding: {what} {value} has {len(value)} axes, the conv {dims}")
    return value


def torch_pads(
    padding: int | Sequence[int] | str,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    dims: int = 2,
) -> Pads:
    """The (before, after) zeros torch's ``padding`` adds on each spatial axis (``padding_mode
    ="zeros"``). ``dims`` counts the spatial axes where every argument is an int."""
    for value in (kernel_size, stride, dilation, padding):
        if not isinstance(value, int | str):
            dims = len(value)
    k = _tuple(kernel_size, dims, "kernel_size")
    s = _tuple(stride, dims, "stride")
    d = _tuple(dilation, dims, "dilation")
    if padding == "valid":
        return ((0, 0),) * dims
    if padding == "same":
        if any(v != 1 for v in s):
            raise LayoutError("padding: torch refuses padding='same' with a stride other than 1")
        total = [di * (ki - 1) for ki, di in zip(k, d, strict=True)]
        return tuple((t // 2, t - t // 2) for t in total)
    if isinstance(padding, str):
        raise LayoutError(
            f"padding: torch's padding is an int, a tuple, 'valid' or 'same': {padding!r}"
        )
    return tuple((p, p) for p in _tuple(padding, dims, "padding"))


def keras_same_pads(
    input_size: int | Sequence[int] | None,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    dims: int = 2,
) -> Pads:
    """The (before, after) zeros Keras's ``padding="same"`` adds on each spatial axis (the
    extra one at the end). ``input_size`` (the spatial sizes) matters only where a stride is
    above 1; None there is an error."""
    for value in (kernel_size, stride, dilation, input_size):
        if value is not None and not isinstance(value, int):
            dims = len(value)
    k = _tuple(kernel_size, dims, "kernel_size")
    s = _tuple(stride, dims, "stride")
    d = _tuple(dilation, dims, "dilation")
    if input_size is None:
        if any(v != 1 for v in s):
            raise LayoutError("padding: Keras's 'same' at a stride > 1 depends on the input size")
        n = (0,) * dims
    else:
        n = _tuple(input_size, dims, "input_size")
    pads = []
    for ni, ki, si, di in zip(n, k, s, d, strict=True):
        span = (ki - 1) * di + 1
        total = span - 1 if si == 1 else max((-(-ni // si) - 1) * si + span - ni, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


@dataclass(frozen=True)
class KerasPadding:
    """How a Keras conv reproduces a torch conv's padding: ``padding`` is the Keras conv's own
    argument; ``explicit``, when not None, the ((before, after), ...) of a ``ZeroPadding1D/2D/3D``
    to put before it (``ZeroPadding1D`` takes the one pair); ``why`` says which and why."""

    padding: str
    explicit: Pads | None
    why: str


def keras_padding(
    padding: int | Sequence[int] | str,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    input_size: int | Sequence[int] | None = None,
    dims: int = 2,
) -> KerasPadding:
    """What reproduces torch's ``Conv(padding=padding, ...)`` in Keras: ``"valid"`` where torch
    pads nothing, ``"same"`` where Keras's rule pads exactly what torch does (stride 1 and a
    symmetric total, or at a stride > 1 for the given ``input_size`` only), else explicit zeros
    and ``"valid"``, right for every input size."""
    pads = torch_pads(padding, kernel_size, stride, dilation, dims)
    if all(p == (0, 0) for p in pads):
        return KerasPadding("valid", None, "torch pads nothing")
    strided = any(v != 1 for v in _tuple(stride, len(pads), "stride"))
    if strided and input_size is None:
        return KerasPadding(
            "valid",
            pads,
            f"at a stride > 1 Keras's 'same' depends on the input size; explicit {pads} is "
            "torch's for every size",
        )
    same = keras_same_pads(input_size, kernel_size, stride, dilation, len(pads))
    if same == pads:
        where = f" for input size {input_size}" if strided else ""
        return KerasPadding("same", None, f"Keras's 'same' pads {pads}, as torch does{where}")
    return KerasPadding(
        "valid",
        pads,
        f"Keras's 'same' pads {same} (the extra zero at the end), torch {pads}",
    )
