"""The numerics a reference computes with: plain maths (``EXACT``) unless the calibration says.

A reference is plain maths, but two of its decisions are the tolerance calibration's to make
(``equiv.tolerance.policy``): which branch a branching case takes (the float32 shadow follows the
float64 run's branches, and a run may follow an implementation through an ambiguous step),
and on which side of its kink a ReLU unit lies (the float32 shadow flips every unit within
rounding distance, ``equiv.reference.kinks``). The reference asks this object at those two points
and
nowhere else::

    branch = numerics.branch(choose_branch(prev_loss, cfg))
    mask = numerics.relu_mask(h, x, params, "w1")

``EXACT`` answers with the reference's own choice and ``h > 0``. ``ReferenceTrainer`` passes
``ForcedBranch`` for a forced step and the calibration passes ``KinkShadow``s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from equiv.reference import kinks
from equiv.reference.kinks import Flip


class Numerics:
    """Exact numerics: the reference's own branch, ``h > 0`` for a ReLU.

    ``w``/``b`` (and ``w1``... for a product) name the parameters of the affine map(s) that
    computed ``h`` from ``x``; only the calibration's shadow reads them (its rounding radius)."""

    def branch(self, chosen: str) -> str:
        return chosen

    def relu_mask(
        self,
        h: np.ndarray,
        x: np.ndarray,
        params: dict,
        w: str,
        b: str | None = None,
        x_from: str | None = None,
    ) -> np.ndarray:
        """``x_from``: the ``w`` of the earlier masked layer whose output ``x`` is (None when
        ``x`` is data): the shadow's rounding radius then includes that layer's."""
        return h > 0

    def product_relu_mask(
        self,
        h1: np.ndarray,
        h2: np.ndarray,
        x: np.ndarray,
        params: dict,
        w1: str,
        b1: str | None,
        w2: str,
        b2: str | None,
        x_from: str | None = None,
    ) -> np.ndarray:
        """The mask of relu(h1 * h2), h1 and h2 affine maps of the same ``x``."""
        return h1 * h2 > 0

    def kink_mask(self, h: np.ndarray, key: str) -> np.ndarray:
        """The mask of relu(h) for a pre-activation of any computation (a convolution and
        BatchNorm, a residual sum), named ``key`` (unique per ReLU in a step). The shadow's
        rounding radius is then measured, not derived from an affine map
        (``equiv.reference.kinks``)."""
        return h > 0

    def pool_choice(self, windows: np.ndarray, key: str) -> np.ndarray:
        """The index of each window's maximum (``windows``: (..., k)), the element a max-pool
        routes its gradient to: the first maximum, as torch's CPU kernel takes it. ``key``
        names the pool."""
        return np.argmax(windows, axis=-1)

    def rounded(self, value: np.ndarray) -> np.ndarray:
        """A layer's result (forward or backward) that another correct algorithm (another
        summation order, a fused kernel) computes with other rounding: ``value`` itself, but
        for the calibration's Monte Carlo shadow (``MonteCarloRounding``)."""
        return value


EXACT = Numerics()


@dataclass(frozen=True)
class ForcedBranch(Numerics):
    """Takes ``chosen`` whatever the reference would choose; masks as ``base``'s. For the
    calibration's shadows, ``ReferenceTrainer.redo`` and finite differences at a fixed branch."""

    chosen: str
    base: Numerics = EXACT

    def branch(self, chosen: str) -> str:
        return self.chosen

    def relu_mask(self, h, x, params, w, b=None, x_from=None):
        return self.base.relu_mask(h, x, params, w, b, x_from)

    def product_relu_mask(self, h1, h2, x, params, w1, b1, w2, b2, x_from=None):
        return self.base.product_relu_mask(h1, h2, x, params, w1, b1, w2, b2, x_from)

    def kink_mask(self, h, key):
        return self.base.kink_mask(h, key)

    def pool_choice(self, windows, key):
        return self.base.pool_choice(windows, key)

    def rounded(self, value):
        return self.base.rounded(value)


@dataclass(frozen=True)
class KinkShadow(Numerics):
    """The calibration's ReLUs (``equiv.reference.kinks``): with a recording ``Flip`` (the float64
    reference) the masks are ``h > 0`` and kept; with a flipping one (the float32 shadow)
    every unit within rounding distance of its kink takes the side opposite to the recorded
    float64 mask. ``flip.drift`` is the calibration's to update before each step."""

    flip: Flip

    def relu_mask(self, h, x, params, w, b=None, x_from=None):
        return kinks.relu_mask(h, self.flip, x, params, w, b, x_from)

    def product_relu_mask(self, h1, h2, x, params, w1, b1, w2, b2, x_from=None):
        return kinks.product_relu_mask(h1, h2, self.flip, x, params, w1, b1, w2, b2, x_from)

    def kink_mask(self, h, key):
        return kinks.measured_mask(h, self.flip, key)

    def pool_choice(self, windows, key):
        return kinks.measured_choice(windows, self.flip, key)


def recording() -> KinkShadow:
    """For the float64 reference of a float32 calibration: exact, its masks kept."""
    return KinkShadow(Flip(0.0, recording=True))


def measuring(recorded: KinkShadow) -> KinkShadow:
    """For a plain float32 run beside the shadow: exact masks, and how far its pre-activations
    are from ``recorded``'s at each step, where the reference asks ``kink_mask`` or
    ``pool_choice`` (the flipping shadow's measured radii)."""
    return KinkShadow(Flip(0.0, values=recorded.flip.values, measuring=True))


def flipping(
    eps: float, recorded: KinkShadow, factor: float = 1.0, measured: KinkShadow | None = None
) -> KinkShadow:
    """For the float32 shadow: flips units within ``eps`` rounding (plus the drift) of the
    kink, to the side opposite ``recorded``'s masks of the same step. ``factor`` (the
    tolerance's K) and ``measured`` (a ``measuring`` run's spreads) give the radii of
    ``kink_mask`` and ``pool_choice``."""
    flip = Flip(
        eps,
        masks=recorded.flip.masks,
        values=recorded.flip.values,
        spreads=measured.flip.spreads if measured else {},
        factor=factor,
    )
    return KinkShadow(flip)


@dataclass(frozen=True)
class Following(Numerics):
    """Takes ``recorded``'s masks and max-pool choices of the same step (a recording
    ``KinkShadow``'s): for the calibration's extended-precision step, which must not decide a
    unit at its kink differently from the float64 reference it measures."""

    recorded: KinkShadow

    def kink_mask(self, h, key):
        return self.recorded.flip.masks.get(key, h > 0)

    def pool_choice(self, windows, key):
        masks = self.recorded.flip.masks
        return masks[key] if key in masks else np.argmax(windows, axis=-1)


@dataclass(frozen=True)
class MonteCarloRounding(Numerics):
    """Monte Carlo arithmetic at the layer level, for the float64 calibration's noisy shadow:
    every layer result the reference passes through ``rounded`` is moved by up to one ulp
    of its array's scale (``array_rounding``), drawn afresh at every layer and step.

    Why: every other calibration run is the reference's own algorithm, and an implementation's
    algorithm may lose more. resnet18 seed 1: torch's float64 gradient of layer4.0.conv1
    lost 4 times the reference's at step 0, and chaotic training carried that to 1.05 times
    the step-4 tolerance. Rounding injected into the finished gradients alone scales with the
    gradient's own size, which falls 500 times in four steps by cancellation; rounding
    injected into every layer's activations and backward signals reaches the gradient through
    its sums over the batch, as an implementation's does."""

    rng: np.random.Generator
    eps: float

    def rounded(self, value):
        return array_rounding(value, self.rng, self.eps)


def array_rounding(value, rng: np.random.Generator, eps: float, ulps: float = 1.0) -> np.ndarray:
    """``value`` with every element moved by up to ``ulps`` * ``eps`` * max|value| (uniform):
    the rounding of a sum whose terms are as large as the array's largest element. The
    calibration injects it into layer results (``MonteCarloRounding``) and into finished
    gradients (``tolerance.gradient_rounding``)."""
    value = np.asarray(value)
    if not value.size:
        return value
    scale = float(max(abs(value.max()), abs(value.min())))
    return (value + ulps * eps * scale * rng.uniform(-1.0, 1.0, value.shape)).astype(value.dtype)
