"""Step-by-step comparison of an implementation's records with the float64 reference.

Streaming: one step's arrays at a time, so that a 500-step trajectory of a 100k-parameter model
never sits in memory. Imports no framework.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from equiv.contract.case import CaseSpec
from equiv.contract.divergence import Divergence
from equiv.contract.records import StepRecord
from equiv.layouts.transposition import contiguous
from equiv.reference.trainer import ReferenceTrainer
from equiv.tolerance.policy import (
    Calibration,
    max_abs_diff,
    quantity_keys,
    record_values,
)

# Pipeline order inside one step: the branch is decided first (on the previous loss), then the
# forward pass gives the loss, the backward pass the gradients, the update the parameters.
PHASE = {
    "branch": "control flow",
    "activations": "forward",
    "loss": "forward",
    "grads": "backward",
    "params": "update",
    "state": "state update",
    "evaluation": "evaluation forward",
}
#: points per quantity in a cell's ``series`` (for plotting): a 500-step case pools 5 steps a
#: point, enough for a plot a few hundred pixels wide. 250 made a full run's parity.json 10 MB.
SERIES_POINTS = 100


class NonFinite(Exception):
    def __init__(self, step: int, key: str):
        super().__init__(f"non-finite value (NaN or Inf) first at step {step} in {key}")
        self.step, self.key = step, key


class ShapeMismatch(Exception):
    pass


def error_ratio(err: float, tol: float) -> float:
    """error / tolerance: 0 for an exact match, inf for any error against a zero tolerance."""
    return err / tol if tol > 0 else (0.0 if err == 0 else math.inf)


def error_ratios(err: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """``error_ratio`` elementwise, over a quantity's steps."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tol > 0, err / tol, np.where(err > 0, np.inf, 0.0))


def group_of(key: str) -> str:
    return key.split("/", 1)[0]


#: the quantity groups of a step record, in pipeline order
GROUPS = ("activations", "loss", "grads", "params", "state", "evaluation")


def declared_not_observed(trainer) -> dict[str, str]:
    """A trainer's ``not_observed``: {group: why} for what its framework does not expose
    (``model.fit`` applies its gradients inside its own train step). Empty for most trainers;
    it must leave something to compare."""
    declared = dict(getattr(trainer, "not_observed", None) or {})
    unknown = sorted(set(declared) - set(GROUPS))
    if unknown:
        raise ValueError(f"not_observed names unknown quantities {unknown}; known: {GROUPS}")
    if {"loss", "grads", "params"} <= set(declared):
        raise ValueError("not_observed leaves nothing to compare")
    return declared


def derived_observables(trainer) -> dict[str, tuple[tuple[str, ...], Callable]]:
    """What a trainer built over an ``equiv.layouts.Layout`` (its ``layout``) reports in place
    of parameters its framework ties together: observable name -> (the canonical parameters
    it is made of, how to compute it from them). Keras's LSTM holds torch's ``bias_ih +
    bias_hh`` as one ``bias``: the sum is compared, not a made-up split."""
    layout = getattr(trainer, "layout", None)
    if layout is None:
        return {}
    sources = layout.observable_sources()
    out: dict[str, tuple[tuple[str, ...], Callable]] = {}
    for name, obs in layout.hidden().values():
        out[name] = (sources[name], obs.from_canonical)
    return out


#: a ``StepRecord``'s groups of named arrays
RECORD_GROUPS = ("activations", "grads", "params", "state", "evaluation")


def contiguous_arrays(record: StepRecord) -> StepRecord:
    """``record`` with each array that is a strided view (a channels-last port's kernels read
    canonical through ``np.transpose``) copied C-contiguous, once. Its digest and each of its
    comparisons then stream through memory; on the view, each strided across it (resnet18's
    tf.eager float32 cell: 6 of its 14 s of comparison). The values are the same."""

    def arrays(values: dict) -> dict:
        return {
            k: contiguous(v) if isinstance(v, np.ndarray) and not v.flags.c_contiguous else v
            for k, v in values.items()
        }

    if not isinstance(record, StepRecord):  # a port's own record type: read as it is
        return record
    return replace(record, **{group: arrays(getattr(record, group)) for group in RECORD_GROUPS})


def divergence(
    step: int,
    key: str,
    error: float | None = None,
    tol: float | None = None,
    detail: str | None = None,
) -> Divergence:
    group, _, name = key.partition("/")
    return Divergence(step, group, name or None, PHASE.get(group, group), error, tol, detail)


@dataclass
class Comparison:
    spec: CaseSpec
    calibration: Calibration
    dtype: str
    keys: list[str] = field(init=False)
    max_error: dict[str, float] = field(default_factory=dict)
    max_ratio: dict[str, float] = field(default_factory=dict)
    first_divergence: Divergence | None = None
    branches_impl: list[str | None] = field(default_factory=list)
    branches_ref: list[str | None] = field(default_factory=list)
    ambiguous: list[int] = field(default_factory=list)
    stopped_at: int | None = None
    #: why the comparison stopped there, in words
    stopped_by: str = "a numerically ambiguous branch"
    #: ambiguous steps where the reference followed the implementation's branch
    followed: list[dict[str, Any]] = field(default_factory=list)
    #: re-runs the reference's last step on a given branch and recalibrates from there (set
    #: by ``Check``); returns the new reference record, or a reason why it cannot
    follow: Callable[[int, str], StepRecord | str] | None = None
    warnings: list[str] = field(default_factory=list)
    _error: dict[str, list[float]] = field(default_factory=dict)
    _tol: dict[str, list[float]] = field(default_factory=dict)
    compared: int = 0
    #: quantity groups left out, with why (``leave_out``)
    not_observed: dict[str, str] = field(default_factory=dict)
    #: steps compared after the implementation loaded the reference's state (``add_resynced``)
    resynced: list[int] = field(default_factory=list)
    #: derived observables compared instead of the parameters they hide (``observe``)
    derived: dict[str, tuple[tuple[str, ...], Callable]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._compare_keys(quantity_keys(self.spec))

    def _compare_keys(self, keys: list[str]) -> None:
        """Compare exactly ``keys`` (in pipeline order), with nothing recorded yet."""
        self.keys = keys
        self._error = {k: [] for k in self.keys}
        self._tol = {k: [] for k in self.keys}

    def observe(self, derived: dict[str, tuple[tuple[str, ...], Callable]]) -> None:
        """Compare each derived observable (``derived_observables``) in place of the
        parameters it hides: ``params/<observable>``, the reference's value computed from its
        own parameters, held to the sum of its sources' tolerances (an observable is a sum of
        its sources, moved: |d(a + b)| <= |da| + |db|)."""
        if not derived:
            return
        self.derived = dict(derived)
        hidden = {
            f"params/{source}": f"params/{name}"
            for name, (sources, _) in derived.items()
            for source in sources
        }
        self._compare_keys(list(dict.fromkeys(hidden.get(key, key) for key in self.keys)))

    def leave_out(self, not_observed: dict[str, str]) -> None:
        """Compare nothing of the quantity groups the implementation cannot expose."""
        self.not_observed = dict(not_observed)
        self._compare_keys([k for k in self.keys if group_of(k) not in not_observed])

    def _diverge(self, div: Divergence) -> None:
        if self.first_divergence is None:
            self.first_divergence = div

    def add(self, step: int, impl: StepRecord, ref: StepRecord) -> bool:
        """Compare one step; False when the rest of the run cannot be compared meaningfully."""
        horizon = self.calibration.horizon
        if horizon is not None and step >= horizon:
            self.stopped_at = step
            self.stopped_by = "the float32 horizon (the calibration's float32 shadow left float64)"
            self.warnings.append(
                f"steps from {step} on are not compared: the calibration's float32 shadow, a "
                f"correct float32 run, has left the float64 trajectory by step {horizon} (its "
                "loss off by more than 1/K of the loss's range), so a correct float32 "
                "implementation's later steps cannot be held to the reference "
                "(docs/tolerances.md)"
            )
            return False
        if self.spec.branching:
            decision = self._compare_branch(step, impl.branch, ref.branch)
            if decision is False:
                return False
            if isinstance(decision, StepRecord):
                ref = decision  # the reference's step again, on the implementation's branch
        self._compare(step, impl, ref, self.calibration.tolerance)
        return True

    def add_resynced(
        self, step: int, impl: StepRecord, ref: StepRecord, one_step: Calibration
    ) -> None:
        """Compare a step that the implementation took from the reference's own state at
        ``step`` (resynchronised): held to ``one_step``, the tolerance the same policy derives
        for one step from that state, not to the free-running one (which no correct chaotic
        float32 run keeps to past the horizon)."""
        self.resynced.append(step)
        self._compare(step, impl, ref, lambda key, _: one_step.tolerance(key, 0))

    def stop(self, step: int, why: str) -> None:
        """End the comparison before ``step``, for ``why`` (in words, also a warning)."""
        self.stopped_at = step
        self.stopped_by = why
        self.warnings.append(f"steps from {step} on are not compared: {why}")

    def _compare(self, step: int, impl: StepRecord, ref: StepRecord, tolerance) -> None:
        values, ref_values = record_values(impl), record_values(ref)
        if self.derived:
            own = tolerance

            def tolerance(key: str, t: int) -> float:
                name = key.partition("/")[2]
                if key.startswith("params/") and name in self.derived:
                    return sum(own(f"params/{s}", t) for s in self.derived[name][0])
                return own(key, t)

            for name, (sources, compute) in self.derived.items():
                ref_values[f"params/{name}"] = compute(*(ref.params[s] for s in sources))
        missing = [k for k in self.keys if k not in values]
        optional = {f"activations/{n}" for n in self.spec.port_activations} if missing else set()
        if missing and set(missing) <= optional and not optional & set(values):
            # a hand-written port that records no per-layer activations (the ports built by
            # equiv.support.torch_port/keras_port record them): compared without them
            self.not_observed["activations"] = (
                "this port records no per-layer activations (a hand-written trainer)"
            )
            self.keys = [k for k in self.keys if k not in optional]
            missing = []
        if missing:
            raise ShapeMismatch(f"step {step}: implementation did not report {', '.join(missing)}")
        for key in self.keys:  # keys are already in pipeline order: loss, grads, params
            got, want = values[key], ref_values[key]
            if np.shape(got) != np.shape(want):
                raise ShapeMismatch(
                    f"step {step}: {key} has shape {np.shape(got)}, expected {np.shape(want)}"
                )
            err = max_abs_diff(got, want)  # NaN or Inf whenever ``got`` holds one
            if not math.isfinite(err) and not np.all(np.isfinite(got)):
                raise NonFinite(step, key)
            if key != "loss" and np.asarray(got).dtype != np.dtype(self.dtype):
                detail = f"{np.asarray(got).dtype} in a {self.dtype} cell"
                self._diverge(replace(divergence(step, key, detail=detail), quantity="dtype"))
            tol = tolerance(key, step)
            self._error[key].append(err)
            self._tol[key].append(tol)
            group = group_of(key)
            ratio = error_ratio(err, tol)
            self.max_error[group] = max(self.max_error.get(group, 0.0), err)
            self.max_ratio[group] = max(self.max_ratio.get(group, 0.0), ratio)
            if err > tol:
                self._diverge(divergence(step, key, err, tol))
        self.compared = step + 1

    def _compare_branch(self, step: int, got: str | None, want: str | None) -> bool | StepRecord:
        """True: same branch; False: the comparison ends here; a record: the reference's step
        again, on the implementation's branch (an ambiguous step, followed)."""
        self.branches_impl.append(got)
        self.branches_ref.append(want)
        ambiguous = self.calibration.ambiguous(step, self.spec.config["threshold"])
        if ambiguous:
            self.ambiguous.append(step)
        if got == want:
            return True
        if ambiguous:
            why = self.follow(step, got) if self.follow else "no reference to re-run"
            if isinstance(why, StepRecord):
                self.branches_ref[-1] = got
                self.followed.append({"step": step, "implementation": got, "reference": want})
                self.warnings.append(
                    f"numerically ambiguous branch at step {step}: the previous loss is within "
                    f"tolerance of the threshold and the implementation took {got} where the "
                    f"reference took {want}; the reference followed it (tolerances calibrated "
                    f"anew from step {step} on that path)"
                )
                return why
            self.stopped_at = step
            self.warnings.append(
                f"numerically ambiguous branch at step {step}: the previous loss is within "
                f"tolerance of the threshold and the implementation took {got} where the "
                f"reference took {want}; steps from {step} on are not compared ({why})"
            )
            return False
        self._diverge(divergence(step, "branch", detail=f"took {got}, reference {want}"))
        self.compared = step
        return False

    def series(self) -> dict[str, Any]:
        """Per-quantity error and tolerance against step, max-pooled to <= SERIES_POINTS: each
        point is the last step of its bin, with the error and tolerance of the bin's step where
        error ÷ tolerance was largest (so no excursion beyond tolerance is lost)."""
        n = len(self._error[self.keys[0]]) if self.keys else 0
        if n == 0:
            return {}
        bins = np.array_split(np.arange(n), min(n, SERIES_POINTS))
        out: dict[str, Any] = {"step": [int(b[np.argmax(b)]) for b in bins]}
        for key in self.keys:
            err = np.asarray(self._error[key][:n])
            tol = np.asarray(self._tol[key][:n])
            ratio = error_ratios(err, tol)
            picks = [int(b[np.argmax(ratio[b])]) for b in bins]
            out[key] = {
                "error": [float(f"{err[i]:.4g}") for i in picks],
                "tolerance": [float(f"{tol[i]:.4g}") for i in picks],
            }
        return out

    def errors(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Every compared step's error and tolerance, (steps, keys) each, from step 0."""
        n = min((len(self._error[k]) for k in self.keys), default=0)
        error = np.array([self._error[k][:n] for k in self.keys], dtype=np.float64).T
        tolerance = np.array([self._tol[k][:n] for k in self.keys], dtype=np.float64).T
        return (
            list(self.keys),
            error.reshape(n, len(self.keys)),
            tolerance.reshape(n, len(self.keys)),
        )

    def layer_drilldown(self) -> dict[str, Any] | None:
        """For a case that reports activations and a comparison that diverged: every layer's
        error and tolerance at the first diverging step, in forward order, with the first
        layer out of tolerance and the layers before it, which agree. ``first_layer`` is None
        where the whole forward pass agrees at that step (the divergence starts later in the
        step: the backward pass, the update, the state)."""
        layers = [k for k in self.keys if group_of(k) == "activations"]
        div = self.first_divergence
        if not layers or div is None or div.step >= len(self._error[layers[0]]):
            return None
        step = div.step
        rows = []
        for key in layers:
            err, tol = self._error[key][step], self._tol[key][step]
            ratio = error_ratio(err, tol)
            rows.append(
                {
                    "layer": key.partition("/")[2],
                    "error": float(f"{err:.4g}"),
                    "tolerance": float(f"{tol:.4g}"),
                    "ratio": float(f"{ratio:.4g}"),
                }
            )
        first = next((i for i, row in enumerate(rows) if row["ratio"] > 1), None)
        return {
            "step": step,
            "first_layer": None if first is None else rows[first]["layer"],
            "agreeing": [row["layer"] for row in rows[: len(rows) if first is None else first]],
            "layers": rows,
        }

    def state_summary(self) -> dict[str, Any] | None:
        """Each non-trainable state quantity's (BatchNorm's running statistics) largest error
        and its ratio to the tolerance over the compared steps, and at which step."""
        keys = [k for k in self.keys if group_of(k) == "state"]
        if not keys or not self._error[keys[0]]:
            return None
        out = {}
        for key in keys:
            err, tol = np.asarray(self._error[key]), np.asarray(self._tol[key])
            ratio = error_ratios(err, tol)
            worst = int(np.argmax(ratio))
            out[key.partition("/")[2]] = {
                "max_ratio": float(f"{ratio[worst]:.4g}"),
                "step": worst,
                "error": float(f"{err[worst]:.4g}"),
                "tolerance": float(f"{tol[worst]:.4g}"),
            }
        return out

    def branch_summary(self) -> dict[str, Any] | None:
        if not self.spec.branching:
            return None
        return {
            "implementation": self.branches_impl,
            "reference": self.branches_ref,
            "ambiguous_steps": self.ambiguous,
            "stopped_at": self.stopped_at,
            "followed": self.followed,
            "counts": {
                b: self.branches_ref.count(b) for b in sorted(set(filter(None, self.branches_ref)))
            },
        }


#: ambiguous steps a check follows at most; each costs a calibration of the whole run
MAX_FOLLOWED = 8


@dataclass
class Check:
    """One reference the implementation is compared with, in lockstep, and its comparison.

    At a numerically ambiguous branch decision where the implementation took the other
    branch (either is correct there), the reference re-runs that step on the implementation's
    branch and the tolerances of the rest of the run are calibrated anew along that path, by
    the same policy (``follow``): every step is still compared (issue 15)."""

    label: str
    #: None once the lockstep is over (``release``)
    reference: ReferenceTrainer | None
    comparison: Comparison
    active: bool = True
    #: the calibration of this check along a given branch path (``tolerance.calibrate_on_path``
    #: with the check's case, seed, steps, dtype and variant); None: never follow
    recalibrate: Callable[[list[str | None]], Calibration] | None = None
    #: the reference variant's config overrides (a declared explanation's; () for the plain
    #: reference), ``compute_dtype`` included: what a resynchronised step's tolerance is for
    variant: tuple = ()
    #: the cell's state under that variant (what the reference started from, of the cell's
    #: dtype): a resynchronised step's calibration starts from it, resumed
    start: Any = None

    def __post_init__(self) -> None:
        self.comparison.follow = self.follow

    def release(self) -> None:
        """Drops the reference trainer once its steps are compared: the cell's later work
        (benchmark, reproducibility, localization) builds what it needs, and resnet18's
        float64 reference holds 0.4 GB."""
        self.reference = None

    def follow(self, step: int, branch: str) -> StepRecord | str:
        if self.recalibrate is None:
            return "not followed: this check has no calibration to redo"
        if len(self.comparison.followed) >= MAX_FOLLOWED:
            return (
                f"not followed: {MAX_FOLLOWED} ambiguous steps were followed already, each "
                "costing a calibration"
            )
        self.reference.redo(branch)
        old = self.comparison.calibration
        # The same tolerance policy along the new path: from the start, with the float64
        # reference (and so its shadows) taking the implementation's branch at ``step``. Up to
        # ``step`` the arrays are those of before (the same branches, the same arithmetic).
        self.comparison.calibration = self.recalibrate([*old.branches[:step], branch])
        return self.reference.record()
