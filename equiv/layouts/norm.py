"""BatchNorm and LayerNorm, and the hyperparameters their ports must translate by hand.

Canonical BatchNorm: ``gamma``, ``beta`` (C,) parameters and ``running_mean``,
``running_var`` (C,) *state* (not trained). torch (``nn.BatchNorm1d/2d/3d``) names them
``weight``, ``bias``, ``running_mean``, ``running_var`` and adds ``num_batches_tracked``, a
counter with no canonical counterpart (it matters only with ``momentum=None``); Keras
(``BatchNormalization``) ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``; Flax
(``linen.BatchNorm``) ``params/scale``, ``params/bias``, ``batch_stats/mean``, ``batch_stats/var``.

What a port sets by hand (the layout converts arrays, not constructor arguments):

- momentum: torch updates running = (1 - m) running + m batch (m = 0.1 by default); Keras and
  Flax moving = mu moving + (1 - mu) batch (mu = 0.99 by default). The same update is
  mu = 1 - m: ``keras_momentum``, ``torch_momentum``. (1 - m is rounded: 1 - 0.1 is 0.9
  exactly in float64, not every m is.)
- epsilon: torch 1e-5, Keras 1e-3, Flax 1e-5 (``BATCH_NORM_EPS``).
- the running variance: torch's update uses the *unbiased* batch variance (times n / (n - 1),
  n = N * H * W), Keras's and Flax's the *biased* one (torch.nn.BatchNorm2d docs; the
  normalisation itself uses the biased one in all three). No momentum or epsilon makes them
  agree: after a training step the running variances differ by that factor in the update,
  and a comparison of ``running_var`` must allow it or declare it.

Canonical LayerNorm: ``gamma``, ``beta`` (normalized_shape). torch ``weight``/``bias``, Keras
``gamma``/``beta``, Flax ``params/scale``/``params/bias``; epsilon torch 1e-5, Keras 1e-3,
Flax 1e-6 (``LAYER_NORM_EPS``).
"""

from __future__ import annotations

from collections.abc import Sequence

from equiv.layouts.core import SAME, Layout, LayoutError, channels_last, copy

#: each framework's default BatchNorm epsilon
BATCH_NORM_EPS = {"torch": 1e-5, "keras": 1e-3, "flax": 1e-5}
#: each framework's default BatchNorm momentum, in its own convention
BATCH_NORM_MOMENTUM = {"torch": 0.1, "keras": 0.99, "flax": 0.99}
#: each framework's default LayerNorm epsilon
LAYER_NORM_EPS = {"torch": 1e-5, "keras": 1e-3, "flax": 1e-6}


def keras_momentum(torch_momentum: float) -> float:
    """torch's BatchNorm momentum m as Keras's (and Flax's): 1 - m."""
    if not 0.0 <= torch_momentum <= 1.0:
        raise LayoutError(f"batch norm: momentum {torch_momentum} is not in [0, 1]")
    return 1.0 - torch_momentum


def torch_momentum(keras_momentum: float) -> float:
    """Keras's (or Flax's) BatchNorm momentum mu as torch's: 1 - mu."""
    if not 0.0 <= keras_momentum <= 1.0:
        raise LayoutError(f"batch norm: momentum {keras_momentum} is not in [0, 1]")
    return 1.0 - keras_momentum


def keras_batch_norm_args(momentum: float = 0.1, eps: float = 1e-5) -> dict[str, float]:
    """The ``keras.layers.BatchNormalization`` arguments of torch's ``BatchNorm(eps=,
    momentum=)`` (torch's defaults by default). The running variance still differs: see above."""
    return {"momentum": keras_momentum(momentum), "epsilon": eps}


def _batch_norm(
    name: str,
    channels: int,
    affine: bool,
    names: Sequence[str],
    ignored: dict[str, str],
    data_dims: int | None,
) -> Layout:
    canonical = ["gamma", "beta"] if affine else []
    canonical += ["running_mean", "running_var"]
    framework = list(names) if affine else list(names[2:])
    data = SAME if data_dims is None else channels_last(data_dims)
    return Layout(
        name,
        {c: (channels,) for c in canonical},
        {f: (channels,) for f in framework},
        tuple(copy(c, f) for c, f in zip(canonical, framework, strict=True)),
        state=frozenset({"running_mean", "running_var"}),
        ignored=ignored,
        inputs=data,
        outputs=data,
        notes=(
            "momentum: Keras/Flax mu = 1 - torch's m (keras_momentum)",
            "epsilon defaults differ: torch 1e-5, Keras 1e-3, Flax 1e-5",
            "running variance: torch updates with the unbiased batch variance, "
            "Keras and Flax with the biased one",
        ),
    )


def torch_batch_norm(channels: int, affine: bool = True) -> Layout:
    """``torch.nn.BatchNorm1d/2d/3d(channels, affine=)``: activations channels first, as
    canonical."""
    return _batch_norm(
        f"torch.nn.BatchNorm({channels}, affine={affine})",
        channels,
        affine,
        ("weight", "bias", "running_mean", "running_var"),
        {"num_batches_tracked": "a step counter, used only with momentum=None"},
        None,
    )


def keras_batch_norm(channels: int, affine: bool = True, spatial: int | None = 2) -> Layout:
    """``keras.layers.BatchNormalization(center=affine, scale=affine)`` on channels-last data
    with ``spatial`` spatial axes (None: (N, C) features, no axis to move)."""
    return _batch_norm(
        f"keras.layers.BatchNormalization(center={affine}, scale={affine}) on {channels}",
        channels,
        affine,
        ("gamma", "beta", "moving_mean", "moving_variance"),
        {},
        spatial,
    )


def flax_batch_norm(channels: int, affine: bool = True, spatial: int | None = 2) -> Layout:
    """``flax.linen.BatchNorm(use_scale=affine, use_bias=affine)`` on channels-last data."""
    return _batch_norm(
        f"flax.linen.BatchNorm(use_scale={affine}, use_bias={affine}) on {channels}",
        channels,
        affine,
        ("params/scale", "params/bias", "batch_stats/mean", "batch_stats/var"),
        {},
        spatial,
    )


def _layer_norm(
    name: str, normalized_shape: int | Sequence[int], names: tuple[str, str], affine: bool
) -> Layout:
    shape = (
        (normalized_shape,)
        if isinstance(normalized_shape, int)
        else tuple(int(n) for n in normalized_shape)
    )
    pairs = list(zip(("gamma", "beta"), names, strict=True)) if affine else []
    return Layout(
        name,
        {c: shape for c, _ in pairs},
        {f: shape for _, f in pairs},
        tuple(copy(c, f) for c, f in pairs),
        notes=("epsilon defaults differ: torch 1e-5, Keras 1e-3, Flax 1e-6",),
    )


def torch_layer_norm(normalized_shape: int | Sequence[int], affine: bool = True) -> Layout:
    """``torch.nn.LayerNorm(normalized_shape, elementwise_affine=affine)``."""
    return _layer_norm(
        f"torch.nn.LayerNorm({normalized_shape}, elementwise_affine={affine})",
        normalized_shape,
        ("weight", "bias"),
        affine,
    )


def keras_layer_norm(normalized_shape: int | Sequence[int], affine: bool = True) -> Layout:
    """``keras.layers.LayerNormalization(axis=<the last len(normalized_shape) axes>,
    center=affine, scale=affine)``."""
    return _layer_norm(
        f"keras.layers.LayerNormalization(center={affine}, scale={affine}) on {normalized_shape}",
        normalized_shape,
        ("gamma", "beta"),
        affine,
    )


def flax_layer_norm(features: int, affine: bool = True) -> Layout:
    """``flax.linen.LayerNorm(use_scale=affine, use_bias=affine)`` over the last axis."""
    return _layer_norm(
        f"flax.linen.LayerNorm(use_scale={affine}, use_bias={affine}) on {features}",
        features,
        ("params/scale", "params/bias"),
        affine,
    )
