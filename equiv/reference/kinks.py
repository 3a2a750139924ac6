"""ReLU masks for the references, with the calibration's "adversarial rounding" switch.

A ReLU's gradient jumps at 0. Where a pre-activation lies close enough to 0 that a correct
float32 implementation may put it on the other side, that implementation's gradient differs
from the reference's by a whole unit's contribution, and its trajectory carries the difference
on. The tolerance calibration therefore runs a float32 shadow that flips every such unit
(``Flip``) to the side opposite the float64 reference's: whatever a float32 implementation
could flip, the shadow flips, so the measured spread covers it. The reference proper never
flips: it asks ``equiv.reference.numerics.EXACT``, and the calibration passes
``numerics.KinkShadow``,
which calls the functions below.

"Close enough" is the rounding of this step's dot product, eps * sum_i |x_i w_i| (+ |b|), the
classical first-order bound, plus how far a float32 state may have drifted from the float64
one by now: sum_i |x_i| |dw_i| (+ |db|), with dw the shadow's own measured drift. Without the
drift term an implementation whose state differs from the shadow's by earlier rounding can
flip units the shadow does not (measured: two_layer_mlp, numpy float32 with one BLAS thread,
failed at step 23).

A layer whose input is itself computed (a ReLU after an earlier masked layer, as in
parallel_blocks' second block) has a third term: its input x is a float32 value too, off the
float64 one by up to the earlier layer's own radius dx, which moves h by sum_i |dx_i| |w_i|.
The reference names that earlier layer (``x_from``); its radius is kept per step
(``Flip.radii``). Without it the float32 shadow of parallel_blocks seed 7 did not flip a
second-block unit that four float32 implementations (numpy, tf.xla, jax.eager, jax.jit) all
flipped at step 11: a false alarm at 3.3 times the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Flip:
    eps: float
    #: |shadow - float64 reference| per parameter, before the current step
    drift: dict[str, np.ndarray] = field(default_factory=dict)
    #: the float64 reference's masks at this step, per layer (filled by a recording Flip)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    recording: bool = False
    #: this step's radius of each masked layer's pre-activation, by mask key (filled by a
    #: flipping Flip): how far a later layer's computed input may be off (``x_from``)
    radii: dict[str, np.ndarray] = field(default_factory=dict)
    #: the float64 reference's pre-activations (and max-pool windows) at this step, by key,
    #: for the measured radius of ``measured_mask``/``measured_choice`` (filled by recording)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    #: a plain float32 run's largest |h32 - h64| at this step, by key (filled by a measuring
    #: Flip, read by the flipping one)
    spreads: dict[str, float] = field(default_factory=dict)
    measuring: bool = False
    #: the tolerance policy's safety factor K (``equiv.tolerance.policy``), for the measured radius
    factor: float = 1.0

    def _finite_pair(self, h: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``h`` and the float64 values of ``key`` without the infinite entries (a max-pool's
        -inf padding: the same in every run)."""
        h64 = self.values[key]
        finite = np.isfinite(h64)
        return (h, h64) if finite.all() else (h[finite], h64[finite])

    def measure(self, h: np.ndarray, key: str) -> None:
        """A measuring Flip (a plain float32 run that never flips): keep how far its ``h``
        is from the float64 one, the whole array's largest difference."""
        h, h64 = self._finite_pair(h, key)
        diff = np.subtract(h, h64, dtype=np.float64)
        self.spreads[key] = float(np.max(np.abs(diff))) if diff.size else 0.0

    def measured_radius(self, h: np.ndarray, key: str) -> float:
        """How far a correct float32 implementation's ``h`` may be from the float64 one: K
        times what the plain float32 run's is (``measure``), and never below one rounding of
        the array's scale, as the tolerance of any compared quantity is derived
        (``equiv.tolerance.policy``). Not this run's own spread: its flipped units move later layers
        by up to the radius, BatchNorm over a few values amplifies that, and a radius measured
        on it feeds on itself (measured on resnet18: from 3 ulps of the scale at the stem to
        10^7 at layer4 within one step)."""
        _, h64 = self._finite_pair(h, key)
        scale = float(np.max(np.abs(h64))) if h64.size else 0.0
        radius = self.factor * max(self.spreads.get(key, 0.0), self.eps * scale)
        self.radii[key] = np.asarray(radius)
        return radius

    def radius(
        self, x: np.ndarray, params: dict, w: str, b: str | None = None, x_from: str | None = None
    ) -> np.ndarray:
        ax = np.abs(x)
        r = self.eps * (ax @ np.abs(params[w]))
        if w in self.drift:
            r = r + ax @ self.drift[w]
        if x_from is not None:
            r = r + self.radii[x_from] @ np.abs(params[w])
        if b is not None:
            r = r + self.eps * np.abs(params[b]) + self.drift.get(b, 0.0)
        return r


def relu_mask(
    h: np.ndarray,
    flip: Flip | None = None,
    x: np.ndarray | None = None,
    params: dict | None = None,
    w: str = "w1",
    b: str | None = None,
    x_from: str | None = None,
) -> np.ndarray:
    """``h > 0``; with a recording ``flip``, the mask is kept for the shadow; with a flipping
    one, every unit within its radius of the kink takes the side *opposite to the float64
    reference's* (flipping relative to its own rounding could undo a real float32 flip).
    ``x_from``: the key of the earlier masked layer that computed ``x`` (None: x is data)."""
    return _kink_mask(h, flip, w, lambda: flip.radius(x, params, w, b, x_from))


def product_relu_mask(
    h1: np.ndarray,
    h2: np.ndarray,
    flip: Flip | None = None,
    x: np.ndarray | None = None,
    params: dict | None = None,
    w1: str = "w1",
    b1: str | None = None,
    w2: str = "w2",
    b2: str | None = None,
    x_from: str | None = None,
) -> np.ndarray:
    """``h1 * h2 > 0`` for a ReLU of the product of two affine maps of the same input ``x``
    (h1 = x @ w1 + b1, h2 = x @ w2 + b2), with ``relu_mask``'s recording and flipping; the
    mask is kept under ``w1``'s name. The product's radius is first order in both factors'
    (``product_radius``)."""
    return _kink_mask(
        h1 * h2,
        flip,
        w1,
        lambda: product_radius(flip, h1, h2, x, params, w1, b1, w2, b2, x_from),
    )


def _kink_mask(h: np.ndarray, flip: Flip | None, key: str, radius) -> np.ndarray:
    """``h > 0``, recorded under ``key`` by a recording ``flip``; a flipping one puts every
    unit within ``radius()`` of the kink on the side opposite to the float64 reference's."""
    mask = h > 0
    if flip is None:
        return mask
    if flip.recording:
        flip.masks[key] = mask
        return mask
    r = flip.radii[key] = radius()
    at_risk = np.abs(h) <= r
    reference = flip.masks.get(key, mask)
    return np.where(at_risk, ~reference, mask)


def product_radius(
    flip: Flip,
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
    """How far float32 may move h1 * h2: |h2| r1 + |h1| r2 (each factor's own radius,
    ``Flip.radius``) plus the rounding of the product itself, eps |h1 h2|."""
    r1 = flip.radius(x, params, w1, b1, x_from)
    r2 = flip.radius(x, params, w2, b2, x_from)
    return np.abs(h2) * r1 + np.abs(h1) * r2 + flip.eps * np.abs(h1 * h2)


def _takes_part(flip: Flip | None, key: str, exact: np.ndarray, values: np.ndarray) -> bool:
    """Whether ``flip`` flips here; a recording Flip keeps the exact decision and the float64
    ``values`` under ``key``, a measuring one its spread from them (both answer exactly)."""
    if flip is None or key not in flip.values and not flip.recording:
        return False
    if flip.recording:
        flip.masks[key], flip.values[key] = exact, values
        return False
    if flip.measuring:
        flip.measure(values, key)
        return False
    return True


def measured_mask(h: np.ndarray, flip: Flip | None, key: str) -> np.ndarray:
    """``h > 0`` for the ReLU of a pre-activation no affine bound describes (a convolution,
    then BatchNorm, then maybe a residual sum): the flipping run's radius is measured on a
    plain float32 run (``Flip.measure``, ``Flip.measured_radius``), and every unit within it
    takes the side opposite to the float64 reference's."""
    mask = h > 0
    if not _takes_part(flip, key, mask, h):
        return mask
    at_risk = np.abs(h) <= flip.measured_radius(h, key)
    return np.where(at_risk, ~flip.masks[key], mask)


def measured_choice(windows: np.ndarray, flip: Flip | None, key: str) -> np.ndarray:
    """Each max-pool window's maximum (``windows``: (..., k)), where the gradient goes; the
    flipping run routes every window whose two largest elements are within twice the
    measured radius of each other (either may be the larger in float32) to the one the
    float64 reference did not choose: a max-pool's kink is a near-tie."""
    choice = np.argmax(windows, axis=-1)
    if not _takes_part(flip, key, choice, windows):
        return choice
    radius = flip.measured_radius(windows, key)
    order = np.argsort(windows, axis=-1)
    top, second = order[..., -1], order[..., -2]
    gap = np.take_along_axis(windows, top[..., None], -1) - np.take_along_axis(
        windows, second[..., None], -1
    )
    at_risk = gap[..., 0] <= 2 * radius
    other = np.where(top == flip.masks[key], second, top)
    return np.where(at_risk, other, choice)
