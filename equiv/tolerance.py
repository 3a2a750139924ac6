"""The tolerance policy: how far from the float64 reference a correct implementation may land.

See ``docs/tolerances.md`` for the derivation. In short, for quantity q (the loss, one
parameter's gradient, one parameter after the update) at step t of a cell of dtype d:

    tol[t, q] = K * eps(d) * scale[t, q] * A[t, q]

- ``scale`` is max|ref64[t, q]|, the size of the quantity itself (an array-wide scale, so that
  elements that pass near zero do not demand impossible relative accuracy);
- ``A`` is the measured rounding amplification of this computation at this step: a float32
  run of the reference from the same start, made to follow the float64 run's branches, lands
  |ref32 - ref64| away, and A = |ref32 - ref64| / (eps32 * scale), as a running maximum over
  steps and never below 1. For float32 cells that shadow also flips every ReLU unit within
  rounding distance of its kink (``equiv.kinks``). Shadows with injected rounding differences
  (gradients, and parameters for float64) join the maximum; see ``_calibrate``. It is what
  turns "the loss falls 14 orders of magnitude" into a tolerance that grows exactly as float
  arithmetic loses digits;
- ``K`` is one global safety factor for "another correct implementation rounds differently":
  a different summation order is another draw of rounding error of the same size.

Nothing in here knows about backends: every cell of a (case, seed, steps, dtype) shares one
calibration.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from threadpoolctl import threadpool_limits

from equiv.case import CaseSpec, get_case
from equiv.kinks import Flip
from equiv.reference import ReferenceTrainer

K = 8.0
EPS = {"float64": float(np.finfo(np.float64).eps), "float32": float(np.finfo(np.float32).eps)}


def quantity_keys(spec: CaseSpec) -> list[str]:
    names = spec.param_names
    return ["loss"] + [f"grads/{n}" for n in names] + [f"params/{n}" for n in names]


def record_values(record) -> dict[str, np.ndarray | float]:
    out: dict[str, np.ndarray | float] = {"loss": record.loss}
    out.update({f"grads/{k}": v for k, v in record.grads.items()})
    out.update({f"params/{k}": v for k, v in record.params.items()})
    return out


def max_abs(a) -> float:
    return float(np.max(np.abs(a))) if np.size(a) else 0.0


def max_abs_diff(a, b) -> float:
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a64 - b64))) if a64.size else 0.0


@dataclass(frozen=True)
class Calibration:
    """Per-step tolerances of one (case, seed, steps, dtype), plus the float64 branch path."""

    dtype: str
    keys: tuple[str, ...]
    tol: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]
    amplification: dict[str, np.ndarray]
    branches: tuple[str | None, ...]
    losses64: np.ndarray

    def tolerance(self, key: str, step: int) -> float:
        return float(self.tol[key][step])

    def ambiguous(self, step: int, threshold: float) -> bool:
        """Whether the branch decision at ``step`` rests on a loss within tolerance of the
        threshold (so that a correct implementation may take either branch)."""
        if step == 0:
            return False  # decided on the given initial prev_loss, not on a computed value
        prev = step - 1
        return abs(self.losses64[prev] - threshold) <= self.tol["loss"][prev]


def gradient_rounding(
    grads: dict[str, np.ndarray], rng: np.random.Generator, dtype: str = "float64"
) -> dict:
    """Each element moved by up to one ulp (of ``dtype``) of its array's largest magnitude."""
    return {
        k: (g + EPS[dtype] * max_abs(g) * rng.uniform(-1.0, 1.0, size=np.shape(g))).astype(
            np.asarray(g).dtype
        )
        for k, g in grads.items()
    }


def envelope(values: np.ndarray) -> np.ndarray:
    """Running maximum: a rounding perturbation, once made, is carried by the state; the
    shadow's spread may dip by chance (measured: 100x within 5 steps of dynamic_branching)."""
    return np.maximum.accumulate(values)


def calibrate(
    spec: CaseSpec, seed: int, steps: int, dtype: str, variant: tuple = ()
) -> Calibration:
    """Tolerances for the cells of (case, seed, steps, dtype), optionally for a reference
    variant (a declared explanation's config overrides)."""
    return _calibrate_cached(spec.name, seed, steps, dtype, variant)


@lru_cache(maxsize=16)
def _calibrate_cached(case: str, seed: int, steps: int, dtype: str, variant: tuple) -> Calibration:
    spec = get_case(case)
    overrides = dict(variant)
    # A declared narrower compute precision (Explanation docs) sets the tolerance's precision;
    # the reference itself still computes in float64.
    precision = overrides.pop("compute_dtype", dtype)
    start = spec.make_state(seed, dtype, tuple(sorted(overrides.items())))
    return calibrate_state(spec, start, steps, precision)


def calibrate_state(spec: CaseSpec, start, steps: int, precision: str = "") -> Calibration:
    """Calibrate from any starting state (of the cell's dtype): the teacher-forced check starts
    from the reference's state at a later step. ``precision`` (default: the state's dtype) is
    the arithmetic the tolerance is derived for.

    One BLAS thread: the reference's summation order then does not depend on ``--threads``
    (nor on a loaded machine, where multi-threaded BLAS also slows down by 10x and more)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _calibrate(spec, start, steps, precision or start.dtype)


def _calibrate(spec: CaseSpec, start, steps: int, dtype: str) -> Calibration:
    keys = quantity_keys(spec)
    scale = {k: np.zeros(steps) for k in keys}
    spread = {k: np.zeros(steps) for k in keys}
    branches: list[str | None] = []
    losses = np.zeros(steps)
    recorder = Flip(0.0, recording=True) if dtype == "float32" else None
    ref64 = ReferenceTrainer(spec, start.astype("float64"), flip=recorder)
    # For float32 cells the shadow also flips every ReLU unit within float32 rounding distance of
    # its kink (equiv.kinks): such flips are legitimate for a float32 implementation.
    flip = Flip(EPS["float32"], masks=recorder.masks) if recorder else None
    shadow = ReferenceTrainer(spec, start.astype("float32"), force_branches=branches, flip=flip)
    # For float64 cells, a float64 shadow that gets float64 rounding differences injected
    # measures float64's own amplification directly: where float32 has lost every digit (a
    # converged gradient), or where the update is nonlinear in the gradient (Adam), scaling the
    # float32 spread by eps64/eps32 underestimates it (seen: keras_sequential_adam, seeds 2-5
    # late, and seeds 7 and 13 at steps 0-1). Injected: one ulp of each parameter after every
    # step, and before every update one ulp of the gradient's array scale max|g| in each
    # gradient element, the size of the rounding error of a sum whose terms are that large
    # (a gradient element near zero is usually a cancellation of such terms).
    jitter = np.random.default_rng(0)
    shadow64 = (
        ReferenceTrainer(
            spec,
            start.astype("float64"),
            force_branches=branches,
            perturb_grads=lambda grads: gradient_rounding(grads, jitter),
        )
        if dtype == "float64"
        else None
    )
    spread64 = {k: np.zeros(steps) for k in keys}
    # For float32 cells, a second float32 shadow whose gradients get up to one float32 ulp of
    # their array scale before every update: the first shadow is one draw of float32 rounding,
    # and where the update is not linear in the gradient (Adam, on elements whose gradient is
    # near rounding noise) another correct implementation's draw lands further out than K
    # covers (seen: keras_sequential_adam on jax, float32, seed 9, step 0, margin 1.07). It only
    # adds to the maximum, so no tolerance is smaller than without it.
    jitter32 = np.random.default_rng(1)
    noisy32 = (
        ReferenceTrainer(
            spec,
            start.astype("float32"),
            force_branches=branches,
            flip=flip,
            perturb_grads=lambda grads: gradient_rounding(grads, jitter32, "float32"),
        )
        if dtype == "float32"
        else None
    )
    spread_noisy = {k: np.zeros(steps) for k in keys}
    for t in range(steps):
        if flip is not None:
            flip.drift = {
                k: np.abs(shadow.params[k].astype(np.float64) - ref64.params[k])
                for k in ref64.params
            }
        ref64.run_step()
        r64 = ref64.record()
        branches.append(r64.branch)
        losses[t] = r64.loss
        shadow.run_step()
        v64, v32 = record_values(r64), record_values(shadow.record())
        for k in keys:
            scale[k][t] = max_abs(v64[k])
            spread[k][t] = max_abs_diff(v32[k], v64[k])
        if noisy32 is not None:
            noisy32.run_step()
            v32n = record_values(noisy32.record())
            for k in keys:
                spread_noisy[k][t] = max_abs_diff(v32n[k], v64[k])
        if shadow64 is not None:
            shadow64.run_step()
            v64p = record_values(shadow64.record())
            for k in keys:
                spread64[k][t] = max_abs_diff(v64p[k], v64[k])
            shadow64.params = {
                k: v * (1 + EPS["float64"] * jitter.choice((-1.0, 1.0), size=v.shape))
                for k, v in shadow64.params.items()
            }
    eps32, eps = EPS["float32"], EPS[dtype]
    amplification, tol = {}, {}
    for k in keys:
        with np.errstate(divide="ignore", invalid="ignore"):
            amp = np.where(scale[k] > 0, spread[k] / (eps32 * scale[k]), 1.0)
            amp64 = np.where(scale[k] > 0, spread64[k] / (EPS["float64"] * scale[k]), 1.0)
            amp_noisy = np.where(scale[k] > 0, spread_noisy[k] / (eps32 * scale[k]), 1.0)
        measured = [envelope(amp), envelope(amp64), envelope(amp_noisy)]
        amplification[k] = np.maximum(np.maximum.reduce(measured), 1.0)
        tol[k] = K * eps * scale[k] * amplification[k]
    return Calibration(
        dtype=dtype,
        keys=tuple(keys),
        tol=tol,
        scale=scale,
        amplification=amplification,
        branches=tuple(branches),
        losses64=losses,
    )


def policy_summary() -> dict[str, object]:
    return {
        "formula": "tol[t,q] = K * eps(dtype) * max|ref64[t,q]| * A[t,q]",
        "K": K,
        "eps": EPS,
        "amplification": "max(1, running max of |ref32 - ref64| / (eps32 * max|ref64|)), "
        "ref32 forced onto ref64's branches; for float32 cells ref32 flips ReLU units within "
        "rounding distance of the kink",
        "doc": "docs/tolerances.md",
    }
