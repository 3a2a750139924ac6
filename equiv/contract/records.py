"""The framework-neutral data that flows through the harness: states, step records, cells.

Everything here is plain numpy and Python so that it can cross a process boundary (pickle keeps
float64 bit-exact) and be compared without importing any framework.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from equiv.contract.divergence import Divergence, as_json

DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class TrainingState:
    """Everything training carries from one step to the next, in the canonical layout: where a
    port must stand to run step ``step`` as the reference does.

    ``optimizer`` uses one vocabulary in every framework (``equiv.reference.optim``):
    ``momentum/<param>`` (SGD's buffer, torch's form: buffer <- momentum * buffer + g),
    ``m/<param>`` and ``v/<param>`` (Adam's moments) and ``t`` (Adam's step count, a 0-d array);
    a key that is absent is state not yet made (before the first step). ``state`` is the model's
    non-trainable state (BatchNorm's running statistics) by canonical name; ``prev_loss`` the
    last step's loss, for data-dependent control flow."""

    step: int
    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    prev_loss: float | None = None

    def astype(self, dtype: str) -> TrainingState:
        """The state in ``dtype``; an array already of it is shared, not copied (a state is
        never written to: whoever loads one copies it in; resnet18's is 100 MB a copy)."""

        def cast(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {
                k: v.astype(dtype, copy=False) if np.issubdtype(v.dtype, np.floating) else v
                for k, v in arrays.items()
            }

        return TrainingState(
            self.step, cast(self.params), cast(self.optimizer), cast(self.state), self.prev_loss
        )


@dataclass(frozen=True)
class CaseState:
    """One cell's starting point: data and initial parameters, canonical names and layout.

    ``resume``: a later point of training to start from instead (the teacher-forced check of a
    failing step starts from the reference's own state there); its parameters replace
    ``params``."""

    data: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    config: dict[str, Any]
    dtype: str
    resume: TrainingState | None = None

    def resumed(self, training: TrainingState) -> CaseState:
        """This cell's state, started at ``training`` instead (its parameters replace
        ``params``, so that a port built from the state and one that loads ``resume`` agree)."""
        return CaseState(self.data, training.params, self.config, self.dtype, training)

    def astype(self, dtype: str) -> CaseState:
        cast = {k: v.astype(dtype) for k, v in self.data.items()}
        return CaseState(
            data=cast,
            params={k: v.astype(dtype) for k, v in self.params.items()},
            config=self.config,
            dtype=dtype,
            resume=self.resume.astype(dtype) if self.resume is not None else None,
        )


@dataclass
class StepRecord:
    """What one training step produced, as numpy arrays in the canonical layout.

    ``loss`` is the loss computed from the parameters *before* the update, ``grads`` its
    gradients, ``params`` the parameters *after* the update; ``branch`` names the branch taken
    for cases with data-dependent control flow (None otherwise).

    Cases that declare them (``CaseSpec.activation_names`` ...) also report ``activations``,
    the step's forward activations per named layer (before the update: they locate the first
    diverging layer), ``state``, non-trainable state after the step (BatchNorm's running
    statistics), and ``evaluation``, outputs of an evaluation-mode forward pass after the
    update (logits computed with the running statistics).
    """

    loss: float
    grads: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    branch: str | None = None
    activations: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict[str, np.ndarray] = field(default_factory=dict)
    evaluation: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, order=True)
class Cell:
    """The unit of verdict: (case, backend, dtype)."""

    case: str
    backend: str
    dtype: str

    @property
    def id(self) -> str:
        return f"{self.case}-{self.backend}-{self.dtype}"


STATUSES = ("pass", "fail", "error", "timeout", "skip", "explained")


@dataclass(frozen=True)
class Caveat:
    """A limit on what a cell's verdict claims, with a short code that a reader can key on:
    a ``pass`` of a compiled mode that recorded no trace says nothing about compiled code. Its
    message is also among the cell's ``warnings``; the report shows a caveat beside the
    verdict (the overview, the problems list), not only in the cell's details."""

    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


#: a compiled mode whose step recorded no trace or compilation: it may have run eagerly
#: (dynamo falls back to eager for what it cannot compile, e.g. ``nn.LSTM``)
NO_TRACE = "no_trace"


#: the phase of ``CellResult.phases_s`` that times the harness's own bookkeeping inside the
#: lockstep (the comparisons, the step log, resynchronising)
COMPARE = "compare"
#: the phase that times the float64 reference's own steps beside the port's (inside the
#: lockstep): the part of the harness's share that is the ground truth computed, as much work
#: as a numpy port's, where ``compare`` is what checking it against the port adds
REFERENCE = "reference"
#: the phases that are the harness's work, not the port's: the float64 reference's runs
#: (calibration; its steps beside the port's: reference), the comparisons (compare) and what
#: equiv adds after the verdict (localization, diagnosis, the reproducibility re-run, the
#: step records: extras, diagnosis). The others (startup, imports, lockstep, benchmark) are
#: the port's own: its framework's import, its build, steps, synchronisation and records.
HARNESS_PHASES = ("calibration", REFERENCE, COMPARE, "extras", "diagnosis")


def harness_split(phases_s: dict[str, float]) -> tuple[float, float]:
    """(the port's own seconds, the harness's seconds) of a cell's ``phases_s``."""
    harness = sum(v for k, v in phases_s.items() if k in HARNESS_PHASES)
    return sum(phases_s.values()) - harness, harness


@dataclass
class CellResult:
    """A cell's verdict and evidence; ``to_json`` is the cell's entry in ``parity.json``."""

    cell: Cell
    status: str
    reason: str = ""
    steps: int = 0
    compared_steps: int = 0
    #: the first step compared from the reference's own state (resynchronised), or None
    resynchronised_from: int | None = None
    max_error: dict[str, float] = field(default_factory=dict)
    max_ratio: dict[str, float] = field(default_factory=dict)
    first_divergence: Divergence | None = None
    branches: dict[str, Any] | None = None
    traces: int | None = None
    warnings: list[str] = field(default_factory=list)
    #: limits on what the verdict claims (``Caveat``), each message also among ``warnings``
    caveats: list[Caveat] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    benchmark: dict[str, Any] | None = None
    traceback: str | None = None
    duration_s: float = 0.0
    #: wall time per phase: imports, calibration, lockstep, benchmark, extras (and the worker
    #: process's startup, on the first cell of a worker)
    phases_s: dict[str, float] = field(default_factory=dict)
    #: the peak resident memory of the process that ran the cell, up to the cell's end (MB)
    peak_rss_mb: float | None = None
    #: times the cell was submitted again because the process or machine running it was lost
    #: (the Ray executor, ``equiv.running.ray_executor``)
    retries: int = 0
    #: a declared difference's proof (``equiv.checking.verdict``), where one is declared and needed
    explanation: ExplanationProof | None = None
    #: where a failing cell first goes wrong (``equiv.checking.diagnosis``)
    localization: Localization | None = None
    #: why a failing cell differs, searched in the catalogue of known differences
    #: (``equiv.checking.causes.Diagnosis.to_json``; None: not diagnosed)
    diagnosis: dict[str, Any] | None = None
    #: whether a fresh run repeats the first steps bit for bit (None: not checked)
    reproducible: bool | None = None
    #: quantity groups the implementation cannot expose (``model.fit``'s gradients), each with
    #: the reason: never compared, so never counted as passed (``Trainer.not_observed``)
    not_observed: dict[str, str] = field(default_factory=dict)
    #: for a case that reports activations, the first diverging step's layer by layer
    #: comparison and the first layer out of tolerance (``Comparison.layer_drilldown``)
    layers: dict[str, Any] | None = None
    #: for a case with non-trainable state, each state quantity's worst step
    #: (``Comparison.state_summary``)
    state: dict[str, Any] | None = None
    #: fields a plugin adds to the cell's JSON entry
    extra: dict[str, Any] = field(default_factory=dict)
    #: arrays for DIR/trajectories/*.npz (not part of the JSON)
    trajectory: dict[str, np.ndarray] | None = None
    #: one digest (16 hex digits) of every quantity of every step the port ran
    #: (``equiv.checking.steplog``): equal digests, bitwise equal runs; None: not recorded
    digest: str | None = None
    #: arrays for DIR/steps/*.npz: per step and quantity, digests, scales, errors, tolerances
    step_records: dict[str, np.ndarray] | None = None

    def add_caveat(self, code: str, message: str) -> None:
        """Record a caveat, and its message among the warnings for readers that know only
        those."""
        self.caveats.append(Caveat(code, message))
        self.warnings.append(message)

    @property
    def coverage(self) -> float | None:
        """The fraction of its steps the cell compared with the reference its verdict rests
        on: for an ``explained`` cell the proven variant (the plain reference is expected to
        part from it early); None where it did not run (skip) or nothing is known of what it
        did (timeout)."""
        if self.status in ("skip", "timeout") or self.steps <= 0:
            return None
        if self.status == "explained" and self.explanation is not None:
            return self.explanation.variant_compared / self.steps
        return self.compared_steps / self.steps

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.cell.case,
            "backend": self.cell.backend,
            "dtype": self.cell.dtype,
            "id": self.cell.id,
            "status": self.status,
            "reason": self.reason,
            "steps": self.steps,
            "compared_steps": self.compared_steps,
            "resynchronised_from": self.resynchronised_from,
            "digest": self.digest,
            "coverage": self.coverage,
            "max_error": self.max_error,
            "max_ratio": self.max_ratio,
            "first_divergence": as_json(self.first_divergence),
            "branches": self.branches,
            "traces": self.traces,
            "warnings": self.warnings,
            "caveats": [c.to_json() for c in self.caveats],
            "series": self.series,
            "benchmark": self.benchmark,
            "traceback": self.traceback,
            "duration_s": round(self.duration_s, 3),
            "phases_s": {k: round(v, 3) for k, v in self.phases_s.items()},
            "peak_rss_mb": self.peak_rss_mb,
            "retries": self.retries,
            **({"explanation": self.explanation.to_json()} if self.explanation else {}),
            **({"localization": self.localization.to_json()} if self.localization else {}),
            **({"diagnosis": self.diagnosis} if self.diagnosis else {}),
            "reproducible": self.reproducible,
            "not_observed": self.not_observed,
            **({"layers": self.layers} if self.layers else {}),
            **({"state": self.state} if self.state else {}),
            **self.extra,
        }


@dataclass(frozen=True)
class Localization:
    """Where a failing cell first goes wrong, and whether re-running that step from the
    reference's own state still disagrees (``teacher_forced``: None where it was not tried)."""

    step: int
    phase: str
    quantity: str
    name: str | None
    diagnosis: str
    forced: bool = False
    forced_divergence: Divergence | None = None

    def to_json(self) -> dict[str, Any]:
        forced = None
        if self.forced:
            forced = {"from_step": self.step, "first_divergence": as_json(self.forced_divergence)}
        return {
            "step": self.step,
            "phase": self.phase,
            "quantity": self.quantity,
            "name": self.name,
            "teacher_forced": forced,
            "diagnosis": self.diagnosis,
        }


@dataclass(frozen=True)
class ExplanationProof:
    """A declared difference and its proof: the reference variant that reproduces it, with
    both sides' largest errors, so that the difference's size stays visible."""

    reason: str
    variant: dict[str, Any]
    proved: bool
    reference_max_ratio: dict[str, float]
    reference_divergence: Divergence | None
    variant_max_ratio: dict[str, float]
    variant_max_error: dict[str, float]
    variant_compared: int
    variant_divergence: Divergence | None
    variant_stopped_at: int | None
    #: the variant's first resynchronised step (the port loaded the variant's state from it)
    variant_resynchronised_from: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "variant": self.variant,
            "proved": self.proved,
            "reference": {
                "max_ratio": self.reference_max_ratio,
                "first_divergence": as_json(self.reference_divergence),
            },
            "variant_result": {
                "max_ratio": self.variant_max_ratio,
                "max_error": self.variant_max_error,
                "compared_steps": self.variant_compared,
                "first_divergence": as_json(self.variant_divergence),
                "stopped_at": self.variant_stopped_at,
                "resynchronised_from": self.variant_resynchronised_from,
            },
        }
