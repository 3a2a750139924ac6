"""Numpy building blocks for references: each forward returns ``(output, backward)``.

A reference is then a composition of blocks, not a derivation: the forward pass calls the
blocks in order and the backward pass calls the returned closures in reverse, each taking the
gradient of its block's output. Every block is checked against central finite differences in
float64 (``tests/test_layers.py``, with ``equiv.reference.gradcheck.check_gradients``).

The arithmetic is written to keep the input's dtype (no float64 numpy scalar meets a float32
array) and, for the blocks the built-in references use, to perform the same floating-point
operations in the same order as the hand-written references did, so the stored trajectories
and calibrations keep their bits. numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

Array = np.ndarray
#: 0.044715 and sqrt(2 / pi): the tanh approximation of GELU (Hendrycks and Gimpel, 2016)
GELU_TANH_COEFF = 0.044715
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_erf = np.frompyfunc(math.erf, 1, 1)


def _scalar(value: float, like: Array):
    """``value`` in ``like``'s dtype: a numpy float64 scalar would promote a float32 array."""
    return np.asarray(like).dtype.type(value)


def _unbroadcast(grad: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``grad`` over the axes along which an input of ``shape`` was broadcast."""
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


def dense(x: Array, w: Array, b: Array | None = None) -> tuple[Array, Callable]:
    """y = x @ w (+ b) for x (..., n_in), w (n_in, n_out), b (n_out,) or None.

    ``back(gy)`` returns (gx, gw, gb): gw and gb sum over every leading (batch) axis; gb is
    None without a bias. ``back(gy, input_grad=False)`` skips gx (None), for a first layer
    whose input is the data: it saves a matmul as large as the forward one."""
    y = x @ w
    if b is not None:
        y = y + b

    def back(gy: Array, input_grad: bool = True) -> tuple[Array | None, Array, Array | None]:
        x2, gy2 = (
            (x, gy) if x.ndim == 2 else (x.reshape(-1, x.shape[-1]), gy.reshape(-1, gy.shape[-1]))
        )
        gw = x2.T @ gy2
        gb = None if b is None else gy2.sum(axis=0)
        gx = gy @ w.T if input_grad else None
        return gx, gw, gb

    return y, back


def relu(h: Array, mask: Array | None = None) -> tuple[Array, Callable]:
    """relu(h) as ``h * mask``, the mask ``h > 0`` unless given: a reference passes the one
    its numerics decides (``equiv.reference.numerics``), which the calibration's shadow may flip."""
    active = h > 0 if mask is None else mask
    y = h * active

    def back(gy: Array) -> Array:
        return gy * active

    return y, back


def multiply(a: Array, b: Array) -> tuple[Array, Callable]:
    """a * b elementwise (broadcasting); ``back(gy)`` returns (ga, gb)."""
    y = a * b

    def back(gy: Array) -> tuple[Array, Array]:
        return _unbroadcast(gy * b, np.shape(a)), _unbroadcast(gy * a, np.shape(b))

    return y, back


def sigmoid(h: Array) -> tuple[Array, Callable]:
    """1 / (1 + exp(-h)); its backward uses the output: gy * y * (1 - y)."""
    y = 1.0 / (1.0 + np.exp(-h))

    def back(gy: Array) -> Array:
        return gy * y * (1.0 - y)

    return y, back


def gelu(h: Array, approximate: bool = False) -> tuple[Array, Callable]:
    """GELU: exact, 0.5 h (1 + erf(h / sqrt 2)) (torch's and Flax's ``approximate=False``,
    Keras's default is the tanh form: see ``docs``), or the tanh approximation
    0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3))) that ``approximate=True``/``"tanh"``
    selects in torch, JAX and Keras."""
    if approximate:
        c, k = _scalar(SQRT_2_OVER_PI, h), _scalar(GELU_TANH_COEFF, h)
        t = np.tanh(c * (h + k * h**3))
        y = 0.5 * h * (1.0 + t)

        def dy_dh() -> Array:
            return 0.5 * (1.0 + t) + 0.5 * h * (1.0 - t * t) * c * (1.0 + 3.0 * k * h * h)

    else:
        erf = np.asarray(_erf(h / _scalar(math.sqrt(2.0), h))).astype(np.asarray(h).dtype)
        phi = 0.5 * (1.0 + erf)
        y = h * phi
        density = _scalar(1.0 / math.sqrt(2.0 * math.pi), h)

        def dy_dh() -> Array:
            return phi + h * density * np.exp(-0.5 * h * h)

    def back(gy: Array) -> Array:
        return gy * dy_dh()

    return y, back


def layer_norm(x: Array, gamma: Array, beta: Array, eps: float) -> tuple[Array, Callable]:
    """Layer normalisation over the last axis with the biased variance, as torch, Keras and
    Flax compute it: (x - mean) / sqrt(var + eps) * gamma + beta.

    ``back(gy)`` returns (gx, ggamma, gbeta); ggamma and gbeta sum over the leading axes."""
    centred = x - x.mean(axis=-1, keepdims=True)
    var = (centred * centred).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + _scalar(eps, x))
    xhat = centred * rstd
    y = xhat * gamma + beta

    def back(gy: Array) -> tuple[Array, Array, Array]:
        lead = tuple(range(gy.ndim - 1))
        ggamma = (gy * xhat).sum(axis=lead)
        gbeta = gy.sum(axis=lead)
        gxhat = gy * gamma
        # d xhat_i / d x_j = rstd (delta_ij - 1/n - xhat_i xhat_j / n)
        mean_g = gxhat.mean(axis=-1, keepdims=True)
        mean_gx = (gxhat * xhat).mean(axis=-1, keepdims=True)
        gx = rstd * (gxhat - mean_g - xhat * mean_gx)
        return gx, ggamma, gbeta

    return y, back


def softmax_attention(
    q: Array, k: Array, v: Array, mask: Array | None = None, fill: float = -np.inf
) -> tuple[Array, Callable]:
    """softmax(q k^T / sqrt(d)) v for q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv).

    ``mask`` (bool, True = attend) broadcasts to (..., Tq, Tk); masked scores are set to
    ``fill`` before a max-subtracted softmax. torch's ``scaled_dot_product_attention`` fills
    -inf; many hand-written blocks fill a large negative number (-1e9, or the dtype's min),
    which gives the same output unless a whole row is masked (then -inf gives NaN, and a
    finite fill attends uniformly). No gradient reaches a masked score.

    ``back(gout)`` returns (gq, gk, gv), each summed to its input's shape where the leading
    axes broadcast."""
    scale = _scalar(1.0 / math.sqrt(q.shape[-1]), q)
    scores = (q @ np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        scores = np.where(mask, scores, _scalar(fill, scores))
    shifted = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    p = e / e.sum(axis=-1, keepdims=True)
    out = p @ v

    def back(gout: Array) -> tuple[Array, Array, Array]:
        gv = np.swapaxes(p, -1, -2) @ gout
        gp = gout @ np.swapaxes(v, -1, -2)
        gs = p * (gp - (gp * p).sum(axis=-1, keepdims=True))
        if mask is not None:
            gs = np.where(mask, gs, _scalar(0.0, gs))
        gs = gs * scale
        gq = gs @ k
        gk = np.swapaxes(gs, -1, -2) @ q
        return (
            _unbroadcast(gq, q.shape),
            _unbroadcast(gk, k.shape),
            _unbroadcast(gv, v.shape),
        )

    return out, back


def mse(pred: Array, target: Array, reduction: str = "mean") -> tuple[Array, Callable]:
    """Mean squared error over every element (Keras's and ``F.mse_loss``'s default);
    ``reduction="sum"``: the sum (the standard key ``loss_reduction``: torch's
    ``reduction="sum"``, optax's per-element losses summed). ``back(g=1.0)`` returns the
    gradient of g * loss with respect to ``pred``."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"loss_reduction must be 'mean' or 'sum', not {reduction!r}")
    if reduction == "sum":
        return sum_of_squares(pred, target)
    diff = pred - target
    loss = np.mean(diff**2)

    def back(g: float = 1.0) -> Array:
        return _scalar(2.0 * g, diff) * diff / diff.size

    return loss, back


def sum_of_squares(pred: Array, target: Array) -> tuple[Array, Callable]:
    """sum((pred - target)^2), the seed's torch loss. ``back(g=1.0)`` as ``mse``'s."""
    diff = pred - target
    loss = np.sum(diff**2)

    def back(g: float = 1.0) -> Array:
        return _scalar(2.0 * g, diff) * diff

    return loss, back


def softmax_cross_entropy(logits: Array, labels: Array) -> tuple[Array, Callable]:
    """Mean over the batch of -log softmax(logits)[label], for logits (..., C) and integer
    labels (...,), with a max-subtracted log-softmax (no overflow, no log of 0).
    ``back(g=1.0)`` returns g * (softmax - onehot) / batch."""
    labels = np.asarray(labels)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=-1, keepdims=True)
    log_p = shifted - np.log(total)
    picked = np.take_along_axis(log_p, labels[..., None], axis=-1)
    count = labels.size
    loss = -picked.sum() / count

    def back(g: float = 1.0) -> Array:
        grad = e / total
        np.put_along_axis(
            grad,
            labels[..., None],
            np.take_along_axis(grad, labels[..., None], axis=-1) - 1.0,
            axis=-1,
        )
        return grad * _scalar(g / count, grad)

    return loss, back


# --- convolutional blocks (resnet18): NCHW activations, OIHW kernels, torch's conventions ---


def _windows(xp: Array, k: int, stride: int) -> Array:
    """Every k x k window of a padded (N, C, H, W) array at ``stride``, as a read-only view
    (N, C, Ho, Wo, k, k): no copy until a caller reshapes it."""
    view = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
    return view[:, :, ::stride, ::stride]


def _pad(x: Array, padding: int, value: float = 0.0) -> Array:
    if not padding:
        return x
    width = ((0, 0), (0, 0), (padding, padding), (padding, padding))
    return np.pad(x, width, constant_values=_scalar(value, x))


def _scatter_windows(parts: Array, padded_shape: tuple, k: int, stride: int, padding: int):
    """The adjoint of ``_windows`` followed by cropping the padding: ``parts``
    (N, C, k, k, Ho, Wo) holds a gradient per window element; each of the k*k kernel
    offsets adds its (N, C, Ho, Wo) slab onto the strided positions it was read from
    (k*k vectorised additions: no ``np.add.at``)."""
    n, c, _, _, ho, wo = parts.shape
    gxp = np.zeros(padded_shape, dtype=parts.dtype)
    for i in range(k):
        for j in range(k):
            gxp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride] += parts[
                :, :, i, j
            ]
    if padding:
        gxp = gxp[:, :, padding:-padding, padding:-padding]
    return np.ascontiguousarray(gxp)


def conv2d(x: Array, w: Array, stride: int = 1, padding: int = 0) -> tuple[Array, Callable]:
    """A bias-free 2-d convolution (cross-correlation, as every framework computes it) of x
    (N, C, H, W) with w (O, C, k, k), symmetric zero padding on each side (torch's
    ``padding=p``), square kernels and strides: y (N, O, Ho, Wo), Ho = (H + 2p - k) // s + 1.

    im2col: the windows become one (C*k*k, N*Ho*Wo) matrix, one matmul with the (O, C*k*k)
    kernel. ``back(gy, input_grad=True)`` returns (gx, gw); gx is None without
    ``input_grad`` (a first convolution, whose input is the data)."""
    n, c, _, _ = x.shape
    o, c_w, k, k2 = w.shape
    assert c == c_w and k == k2, (x.shape, w.shape)
    xp = _pad(x, padding)
    win = _windows(xp, k, stride)
    ho, wo = win.shape[2], win.shape[3]
    # one matmul for the whole batch (a per-sample batched matmul would read w N times)
    cols = win.transpose(1, 4, 5, 0, 2, 3).reshape(c * k * k, n * ho * wo)
    w2 = w.reshape(o, c * k * k)
    y = np.ascontiguousarray((w2 @ cols).reshape(o, n, ho, wo).transpose(1, 0, 2, 3))

    def back(gy: Array, input_grad: bool = True) -> tuple[Array | None, Array]:
        gy2 = gy.transpose(1, 0, 2, 3).reshape(o, n * ho * wo)
        gw = (gy2 @ cols.T).reshape(w.shape)  # sums over the batch and the positions
        if not input_grad:
            return None, gw
        gcols = (w2.T @ gy2).reshape(c, k, k, n, ho, wo).transpose(3, 0, 1, 2, 4, 5)
        return _scatter_windows(gcols, xp.shape, k, stride, padding), gw

    return y, back


class BatchStats(NamedTuple):
    """A training-mode BatchNorm's batch statistics per channel: the mean, the biased
    variance it normalised with, and the count n = N*H*W (for the unbiased n/(n-1) form
    that torch's running variance takes)."""

    mean: Array
    var: Array
    count: int

    def unbiased_var(self) -> Array:
        return self.var * _scalar(self.count / (self.count - 1), self.var)


def _channel(v: Array) -> Array:
    """A per-channel vector (C,) broadcast against (N, C, H, W)."""
    return v.reshape(1, -1, 1, 1)


def batch_norm_train(
    x: Array, gamma: Array, beta: Array, eps: float, one_pass: bool = False
) -> tuple[Array, Callable, BatchStats]:
    """BatchNorm in training mode over (N, H, W) per channel of x (N, C, H, W):
    (x - mean) / sqrt(var + eps) * gamma + beta with the batch's mean and *biased* variance
    (torch, Keras and Flax alike). Returns (y, back, stats): the caller updates its running
    statistics from ``stats`` (each framework its own way). ``back(gy)`` returns
    (gx, ggamma, gbeta); gx includes the statistics' dependence on x. ``one_pass``: the
    variance as mean(x^2) - mean^2 (Keras 3 on torch), which cancels where the mean is large
    against the spread; the same function in exact arithmetic, so the backward is shared."""
    axes = (0, 2, 3)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = x.mean(axis=axes)
    centred = x - _channel(mean)
    var = (x * x).mean(axis=axes) - mean * mean if one_pass else (centred * centred).mean(axis=axes)
    rstd = _channel(1.0 / np.sqrt(var + _scalar(eps, x)))
    xhat = centred * rstd
    y = xhat * _channel(gamma) + _channel(beta)

    def back(gy: Array) -> tuple[Array, Array, Array]:
        ggamma = (gy * xhat).sum(axis=axes)
        gbeta = gy.sum(axis=axes)
        gxhat = gy * _channel(gamma)
        # d xhat_i / d x_j = rstd (delta_ij - 1/n - xhat_i xhat_j / n), as layer_norm's
        mean_g = gxhat.mean(axis=axes, keepdims=True)
        mean_gx = (gxhat * xhat).mean(axis=axes, keepdims=True)
        gx = rstd * (gxhat - mean_g - xhat * mean_gx)
        return gx, ggamma, gbeta

    return y, back, BatchStats(mean, var, count)


def batch_norm_eval(
    x: Array, gamma: Array, beta: Array, mean: Array, var: Array, eps: float
) -> tuple[Array, Callable]:
    """BatchNorm in evaluation mode: a per-channel affine map with the running statistics,
    (x - mean) / sqrt(var + eps) * gamma + beta. ``back(gy)`` returns (gx, ggamma, gbeta)
    (the statistics are constants here)."""
    rstd = _channel(1.0 / np.sqrt(var + _scalar(eps, x)))
    xhat = (x - _channel(mean)) * rstd
    y = xhat * _channel(gamma) + _channel(beta)

    def back(gy: Array) -> tuple[Array, Array, Array]:
        axes = (0, 2, 3)
        return gy * (_channel(gamma) * rstd), (gy * xhat).sum(axis=axes), gy.sum(axis=axes)

    return y, back


def max_pool2d(
    x: Array,
    k: int,
    stride: int,
    padding: int = 0,
    choice: Callable[[Array], Array] | None = None,
) -> tuple[Array, Callable]:
    """k x k max-pooling of x (N, C, H, W) at ``stride``, padded with -inf (torch's: a
    padded position is never the maximum). ``choice(windows)`` (windows (N, C, Ho, Wo, k*k))
    returns each window's chosen index, the element that the output is and that receives
    the gradient: the first maximum by default; a reference passes
    ``lambda w: numerics.pool_choice(w, key)``. ``back(gy)`` returns gx: overlapping windows
    that chose the same element add their gradients there."""
    xp = _pad(x, padding, -np.inf)
    win = _windows(xp, k, stride)
    n, c, ho, wo = win.shape[:4]
    flat = win.reshape(n, c, ho, wo, k * k)
    index = np.argmax(flat, axis=-1) if choice is None else np.asarray(choice(flat))
    y = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0]

    def back(gy: Array) -> Array:
        # the gradient of each window element: gy where it was chosen, 0 elsewhere
        parts = np.zeros((n, c, k * k, ho, wo), dtype=gy.dtype)
        np.put_along_axis(parts, index[:, :, None], gy[:, :, None], axis=2)
        return _scatter_windows(parts.reshape(n, c, k, k, ho, wo), xp.shape, k, stride, padding)

    return y, back


def global_avg_pool(x: Array) -> tuple[Array, Callable]:
    """The mean over the spatial axes of x (N, C, H, W): (N, C). ``back(gy)`` spreads each
    gradient evenly over its H*W positions."""
    y = x.mean(axis=(2, 3))
    area = x.shape[2] * x.shape[3]

    def back(gy: Array) -> Array:
        return np.ascontiguousarray(
            np.broadcast_to((gy * _scalar(1.0 / area, gy))[:, :, None, None], x.shape)
        )

    return y, back
