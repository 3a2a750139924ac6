"""Running one cell: seed, build, step in lockstep with the reference, compare, benchmark.

The pipeline of a cell, one module a stage: configure the process (``equiv.backends.process``), load
the implementation (``equiv.backends.implementations``), calibrate (``equiv.tolerance.policy``),
the lockstep
run and its comparison (here, ``equiv.checking.compare``), the verdict and the proof of a declared
explanation (``equiv.checking.verdict``), the benchmark (``equiv.running.bench``), then
localization and the
reproducibility check (``equiv.checking.diagnosis``) and the trajectory.

``run_cell`` never raises for a problem of the implementation: exceptions, NaN and wrong shapes
become an ``error`` verdict, so one bad cell cannot take a run down. Process isolation (crashes,
hangs, per-process settings such as ``KERAS_BACKEND``) is ``equiv.running.workers``'s job.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from equiv.backends.implementations import ImplSource, load_implementation
from equiv.backends.process import ProcessConfig
from equiv.backends.reference_port import reference_trainer, variant_refusal
from equiv.backends.registry import get_backend
from equiv.checking.compare import (
    Check,
    Comparison,
    NonFinite,
    ShapeMismatch,
    contiguous_arrays,
    declared_not_observed,
    derived_observables,
)
from equiv.checking.diagnosis import fingerprint, localize, reproducible
from equiv.checking.steplog import StepLog
from equiv.checking.verdict import decide, declared_explanation
from equiv.contract.backend import CellSkip
from equiv.contract.case import get_case, unavailable_cases
from equiv.contract.divergence import Divergence
from equiv.contract.records import COMPARE, NO_TRACE, REFERENCE, Cell, CellResult, StepRecord
from equiv.contract.trainer import StateNotLoadable, check_trainer
from equiv.layouts.core import LayoutError
from equiv.running.bench import benchmark_steps
from equiv.tolerance.calibration import Calibration
from equiv.tolerance.policy import (
    calibrate,
    calibrate_on_path,
    calibrate_resynced,
    record_values,
)
from equiv.tolerance.store import CalibrationStore


@dataclass(frozen=True)
class RunOptions:
    seed: int = 0
    steps: int | None = None  # None: each case's own default (the seed's step count)
    #: threads per framework (and numpy's BLAS outside the parity phase). 1 by default, as a
    #: run with one worker per core has: TensorFlow's numbers depend on its thread count (its
    #: matmul splits the inner dimension over threads) and TF fixes it at its first use in a
    #: process, so every in-process run must ask for the same count (docs/performance.md)
    threads: int = 1
    bench_rounds: int = 30
    bench_warmup: int = 3
    timeout_s: float = 900.0
    #: write the cell's files (``DIR/steps``, and ``DIR/trajectories`` where arrays are kept)
    keep_trajectories: bool = True
    #: keep every cell's arrays (data, initial, first and last step's parameters and gradients);
    #: without it only a failing cell's, at its first divergence (docs/parity-json.md)
    keep_arrays: bool = False
    #: a digest of every quantity of every step (``equiv.checking.steplog``), for ``equiv diff``
    digests: bool = True
    #: where calibrations are shared (``equiv.tolerance.store``); None: this process only
    calibration_dir: str | None = None
    #: re-run each cell's first steps on a fresh build and record whether the bits repeat
    #: (``CellResult.reproducible``; None when off); informative, never part of the verdict
    check_reproducible: bool = True
    #: past the float32 horizon (or a variant's), go on comparing each step from the
    #: reference's own state (``Resync``) where the port can load it
    resync: bool = True
    #: with ``resync``: resynchronise from this step on, horizon or not (a check of a port's
    #: ``load_state`` on cells that never reach a horizon); None: from the horizon
    resync_from: int | None = None

    #: the pytest matrix's default step count: a case's ``matrix_steps`` caps ``steps``
    cap_matrix_steps: bool = False
    #: a backend id whose port is every case's reference instead of its numpy one
    #: (``--reference torch.eager``; ``equiv.backends.reference_port``); None: each case's own
    reference: str | None = None
    #: search the catalogue of known differences for why each failing cell differs
    #: (``equiv.checking.causes``): the cell stays ``fail``, with the set found
    diagnose: bool = False
    #: honour the cases' and backends' declared explanations; False runs every cell as if
    #: nothing were declared (what diagnosis finds then is what a declaration should say)
    declarations: bool = True
    #: a declaration whose cell matches the plain reference fails the cell instead of warning
    #: (a project that wants to know the day a framework fixes a difference)
    strict_declarations: bool = False

    @classmethod
    def verdict_only(cls, **overrides: Any) -> RunOptions:
        """Options for a run read only for its verdict (tests, mutants, sweeps): no timing, no
        trajectories, no reproducibility re-run, each a cost nothing would read."""
        quiet = {
            "bench_rounds": 0,
            "keep_trajectories": False,
            "check_reproducible": False,
            "digests": False,
        }
        return cls(**{**quiet, **overrides})

    def steps_for(self, case: str) -> int:
        if case in unavailable_cases():
            return self.steps or 0
        spec = get_case(case)
        if self.steps is None:
            return spec.default_steps
        if self.cap_matrix_steps and spec.matrix_steps is not None:
            return min(self.steps, spec.matrix_steps)
        return self.steps


#: wraps a cell's benchmark; a worker process uses it to have every other worker paused
Exclusive = Callable[[], AbstractContextManager[None]]


class PhaseClock:
    """Wall time per phase of a cell (``CellResult.phases_s``), for the harness's own
    benchmark and for progress: imports, calibration, lockstep, benchmark, extras.

    A phase timed inside another (resynchronised stepping's one-step calibrations, inside the
    lockstep) is counted in its own phase only: the outer one is paused meanwhile, so the
    phases still add up to the cell's time. Only outermost phases are announced."""

    def __init__(self, totals: dict[str, float], on_phase: Callable[[str], None] | None = None):
        self.totals = totals
        self.on_phase = on_phase
        self._inner: list[float] = []  # per open phase: the time of the phases inside it

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        if self.on_phase and not self._inner:
            self.on_phase(phase)
        tick = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - tick
            inner = self._inner.pop()
            self.totals[phase] = self.totals.get(phase, 0.0) + elapsed - inner
            if self._inner:
                self._inner[-1] += elapsed


def run_cell(
    cell: Cell,
    options: RunOptions,
    impl: ImplSource | None = None,
    bench_fixture=None,
    benchmark: bool = True,
    exclusive: Exclusive = contextlib.nullcontext,
    on_phase: Callable[[str], None] | None = None,
) -> CellResult:
    started = time.perf_counter()
    steps = options.steps_for(cell.case)
    result = CellResult(cell=cell, status="error", steps=steps)
    clock = PhaseClock(result.phases_s, on_phase)
    backend = None
    try:
        broken = unavailable_cases().get(cell.case)
        if broken is not None:  # a case package that failed to load: listed with its reason
            result.status, result.reason = "skip", broken.reason
            return result
        backend = get_backend(cell.backend)
        reason = backend.availability()
        if reason:
            result.status, result.reason = "skip", reason
            return result
        bench = BenchPlan(benchmark and options.bench_rounds > 0, bench_fixture, exclusive)
        _run(cell, backend, options, steps, impl, bench, result, clock)
    except CellSkip as exc:
        result.status, result.reason = "skip", str(exc)
    except NonFinite as exc:
        result.status, result.reason = "error", str(exc)
        result.first_divergence = Divergence(exc.step, "non-finite", exc.key)
    except ShapeMismatch as exc:
        result.status, result.reason = "error", f"wrong array shape: {exc}"
    except Exception as exc:
        result.status = "error"
        result.reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        result.traceback = traceback.format_exc()
    finally:
        result.duration_s = time.perf_counter() - started
        result.peak_rss_mb = peak_rss_mb()
        if backend is not None:
            _release_caches(backend, result)
    return result


def _release_caches(backend, result: CellResult) -> None:
    """The framework's caches go once the cell is judged; a failure to drop them is a
    warning, never a change of the cell's verdict."""
    try:
        backend.release_caches()
    except Exception as exc:  # noqa: BLE001 - the cell's verdict stands either way
        warnings.warn(
            f"{result.cell.id}: releasing {backend.id}'s caches failed: "
            f"{type(exc).__name__}: {exc}",
            RuntimeWarning,
            stacklevel=2,
        )


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far (None where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


REPRODUCIBILITY_STEPS = 5


@dataclass(frozen=True)
class BenchPlan:
    """Whether and how a cell's steps are timed: ``fixture`` is pytest's own benchmark fixture
    (inside pytest), ``exclusive`` what makes the timing the only work on the machine."""

    enabled: bool
    fixture: Any = None
    exclusive: Exclusive = contextlib.nullcontext


def _run(cell, backend, options, steps, impl, bench: BenchPlan, result, clock) -> None:
    spec = get_case(cell.case).against(options.reference)
    if spec.reference_port is not None and backend.id == "numpy":
        raise CellSkip(
            f"the numpy reference is not run: the reference is the port {spec.reference_port}"
        )
    explanation = declared_explanation(spec, backend, cell.dtype) if options.declarations else None
    if explanation and (why := variant_refusal(spec, explanation.variant_key())):
        raise CellSkip(why)
    with clock("imports"):  # the first cell of a process imports its framework here
        ProcessConfig.current().prepare(backend, options.threads)
        module = load_implementation(backend, spec, impl)
    state = spec.make_state(options.seed, cell.dtype)
    store = CalibrationStore(options.calibration_dir) if options.calibration_dir else None
    with clock("calibration"):
        checks = [_check("reference", spec, state, options.seed, steps, (), store)]
        if explanation:
            variant = explanation.variant_key()
            checks.append(_check("variant", spec, state, options.seed, steps, variant, store))

    traces_before = backend.traces
    losses = np.full(steps, np.nan)
    # the first and last records, only where a trajectory will hold them (each of resnet18's
    # is 180 MB in float64)
    snapshots: dict[str, StepRecord] | None = (
        {} if options.keep_arrays and not _too_large(state) else None
    )
    # fingerprints of the first free steps, only where the reproducibility check reads them
    early: list[tuple] | None = [] if options.check_reproducible else None
    timing = {"first_call": 0.0}
    log = StepLog() if options.digests else None
    #: per check, the port's and the reference's values at the step it first diverged at,
    #: where a failing cell's arrays will be written
    at_divergence: dict[str, tuple[dict, dict]] | None = (
        {} if options.keep_trajectories and not options.keep_arrays else None
    )
    # numpy's BLAS threads and the framework's OpenMP threads spin-wait on each other when they
    # alternate step by step (measured: 13x slower); the parity phase gives numpy one thread.
    with clock("lockstep"):
        # the default build_trainer checks already; an adapter's own may not
        trainer = check_trainer(_build(backend, spec, state, module), module.__name__)
        result.not_observed = declared_not_observed(trainer)
        derived = derived_observables(trainer)
        for check in checks:
            check.comparison.leave_out(result.not_observed)
            check.comparison.observe(derived)
        with threadpool_limits(limits=1, user_api="blas"):
            with clock(COMPARE):
                resync = Resync.plan(spec, state, options, checks, trainer, store)
            _lockstep(
                trainer,
                checks,
                backend,
                steps,
                Keep(losses, snapshots, early, timing, log, at_divergence, _too_large(state)),
                resync,
                clock,
            )
    for check in checks:
        check.release()
    result.traces = backend.traces - traces_before if backend.compiled else None

    main = checks[0].comparison
    result.not_observed = {**main.not_observed, **result.not_observed}
    result.compared_steps = main.compared
    followed = resync.followed.comparison if resync and resync.followed else main
    result.resynchronised_from = followed.resynced[0] if followed.resynced else None
    result.max_error = main.max_error
    result.max_ratio = main.max_ratio
    result.first_divergence = main.first_divergence
    result.branches = main.branch_summary()
    result.series = main.series()
    result.layers = main.layer_drilldown()
    result.state = main.state_summary()
    if log is not None:
        result.digest = log.cell_digest()
    result.warnings = list(main.warnings)
    if resync is not None and resync.warning:
        result.warnings.append(resync.warning)
    if result.resynchronised_from is not None:
        result.warnings.append(
            f"steps from {result.resynchronised_from} on resynchronised: each started from the "
            f"float64 {'reference' if followed is main else 'reference variant'}'s state at "
            "that step (loaded into the running port) and was held to the one-step tolerance "
            "from there (docs/tolerances.md)"
        )
    if result.traces is not None and main.compared > 2 and result.traces >= main.compared:
        result.warnings.append(
            f"retraced on every step: {result.traces} traces or compilations in "
            f"{main.compared} steps"
        )
    if result.traces == 0:  # a verdict on eager code, under a compiled mode's name
        result.add_caveat(
            NO_TRACE,
            f"a compiled mode recorded no trace ({cell.backend}: no trace or compilation in "
            f"{main.compared} steps): it may have run eagerly, and then its verdict says "
            "nothing about compiled code",
        )
    decide(result, checks, explanation, strict=options.strict_declarations)
    result.benchmark = {"first_call_s": timing["first_call"]}
    if bench.enabled:

        def one_step():
            trainer.run_step()
            backend.synchronize()

        with bench.exclusive(), clock("benchmark"):
            timed = benchmark_steps(
                one_step,
                rounds=options.bench_rounds,
                warmup_rounds=options.bench_warmup,
                fixture=bench.fixture,
                name=cell.id,
            )
        if timed:
            result.benchmark.update(timed)
            flops = spec.flops_per_step(state.config) if spec.flops_per_step else None
            if flops:
                result.benchmark["flops_per_step"] = flops
                result.benchmark["gflops"] = flops / timed["median_s"] / 1e9
    # a declaration that does not account for the cell: the bug is what the declared variant
    # does not explain, so it is localized (and diagnosed) against the variant
    against = checks[1] if explanation and checks[1].comparison.first_divergence else None
    if result.status != "fail":
        trainer = None  # the reproducibility check builds its own: not both at once
    with clock("extras"), threadpool_limits(limits=1, user_api="blas"):
        if result.status == "fail":
            if against is None:
                result.localization = localize(spec, backend, module, state, main, trainer)
            else:
                result.first_divergence = against.comparison.first_divergence
                result.localization = localize(
                    spec, backend, module, against.start, against.comparison, trainer
                )
            if options.diagnose:
                with clock("diagnosis"):
                    result.diagnosis = _diagnose(
                        spec,
                        backend,
                        module,
                        state,
                        options,
                        steps,
                        store,
                        result,
                        explanation,
                        derived,
                    )
                result.reason += f". Diagnosis: {result.diagnosis['sentence']}"
        if options.check_reproducible:
            result.reproducible = reproducible(spec, backend, module, state, early)
        if options.keep_trajectories:
            if log is not None:
                result.step_records = log.arrays([c for c in checks if c.comparison.keys])
            if options.keep_arrays:
                result.trajectory = _trajectory(state, losses, main, snapshots)
            elif result.status == "fail":
                label = "variant" if against is not None else "reference"
                result.trajectory = _divergence_arrays(
                    state, losses, result.first_divergence, at_divergence.get(label)
                )


def _diagnose(spec, backend, module, state, options, steps, store, result, explanation, derived):
    """The catalogue search for a failing cell (``equiv.checking.causes``), from the declared
    variant where one is declared; its checks are made as the cell's are."""
    from equiv.checking.causes import FailingCell, diagnose, phase_limit

    def make_check(variant: tuple, own_calibration: bool) -> Check:
        if own_calibration:
            return _check("variant", spec, state, options.seed, steps, variant, store)
        # ranking only: the cell's own tolerance (the float32 one for a compute_dtype candidate)
        precision = tuple((k, v) for k, v in variant if k == "compute_dtype")
        yardstick = calibrate(spec, options.seed, steps, state.dtype, precision, store)
        return _check("candidate", spec, state, options.seed, steps, variant, None, yardstick)

    cell = FailingCell(
        spec, backend, module, state, steps, make_check, result.not_observed, derived
    )
    base = dict(explanation.variant) if explanation else {}
    found = diagnose(cell, result.first_divergence, base, phase_limit(result.localization))
    return found.to_json(backend.id, state.dtype)


def _build(backend, spec, state, module):
    """The cell's port; a layout that does not fit its model (``LayoutError``) says, in its one
    line, which case and which file."""
    try:
        return backend.build_trainer(spec, state, module)
    except LayoutError as exc:
        where = getattr(module, "__file__", None) or module.__name__
        raise LayoutError(f"case {spec.name}, {where}: {exc}") from None


def _check(label, spec, state, seed, steps, variant, store=None, ranked_by=None) -> Check:
    """The cell held to the reference under ``variant`` (config overrides; () for the plain
    reference), with that variant's own calibration, or with ``ranked_by`` (a calibration
    that only ranks: diagnosis holds its candidates to the cell's own tolerance), which then
    follows no branch."""
    # the variant's start is the cell's: a draw reads the case's own config, never a variant's
    start = replace(state, config={**state.config, **dict(variant)}) if variant else state
    calibration = ranked_by or calibrate(spec, seed, steps, state.dtype, variant, store)
    recalibrate = functools.partial(calibrate_on_path, spec, seed, steps, state.dtype, variant)
    return Check(
        label,
        reference_trainer(spec, start.astype("float64")),
        Comparison(spec, calibration, state.dtype),
        # a reference port cannot be made to take a branch: an ambiguous step is not followed
        recalibrate=recalibrate if spec.reference_port is None and ranked_by is None else None,
        variant=variant,
        start=start,
    )


@dataclass
class Resync:
    """Resynchronised stepping: from step ``start`` (the float32 horizon, where free-running
    comparison ends: a correct chaotic float32 run has left the float64 trajectory) each step
    starts from the float64 reference's own training state, loaded into the running port
    (``load_state``: it keeps its compiled step, its gradient buffers, its data position, its
    own counters), and is held to the tolerance the same policy derives for one step from that
    state.

    The port steps once per step, so it follows one reference: the plain one while the cell's
    verdict is open (no divergence yet), else the declared explanation's variant, whose proof
    then goes on from the variant's own state. The check not followed ends there: its
    comparison would hold the port to a state it was not given."""

    spec: Any
    state: Any
    seed: int
    #: the first step to resynchronise (``RunOptions.resync_from``, else the followed check's
    #: horizon); None: not (yet) known
    start: int | None
    store: CalibrationStore | None = None
    #: the check the port follows, chosen at the first resynchronised step
    followed: Check | None = None
    #: why resynchronisation ended or never began (the port cannot load a state); once set,
    #: every later step runs free
    warning: str | None = None

    @classmethod
    def plan(cls, spec, state, options, checks, trainer, store=None) -> Resync | None:
        horizons = [c.comparison.calibration.horizon for c in checks]
        if not options.resync or (options.resync_from is None and set(horizons) == {None}):
            return None
        resync = cls(spec, state, options.seed, options.resync_from, store)
        if not callable(getattr(trainer, "load_state", None)):
            resync.warning = (
                "not resynchronised: the port has no load_state, so it cannot start a step "
                "from the reference's state (docs/adding-a-case.md)"
            )
        return resync

    def choose(self, checks: list[Check], t: int) -> Check | None:
        """The check to follow from step ``t``, if resynchronisation begins there."""
        main = checks[0]
        target = main
        if main.comparison.first_divergence is not None:
            # the verdict is fail or explained: only the variant's proof is still open
            target = next((c for c in checks[1:] if c.comparison.first_divergence is None), None)
        if target is None or not target.active:
            return None
        begin = self.start if self.start is not None else target.comparison.calibration.horizon
        return target if begin is not None and t >= begin else None

    def step(self, trainer, checks: list[Check], t: int, clock) -> Calibration | None:
        """Before step ``t``: the followed reference's state into ``trainer`` and the one-step
        calibration from it; None where step ``t`` runs free."""
        if self.warning is not None:
            return None
        if self.followed is None:
            self.followed = self.choose(checks, t)
            if self.followed is None:
                return None
            for other in checks:
                if other is not self.followed and other.active:
                    other.active = False
                    other.comparison.stop(t, self.not_followed(other))
                    other.release()  # resnet18's float64 reference: 0.4 GB
        check = self.followed
        if not check.active:
            return None
        # the reference's own arrays, not copies: a float32 cell's astype makes new ones, and
        # in a float64 cell the port copies them in (``load_state``'s contract)
        own = check.reference.training_state(copy=False)
        resume = own.astype(self.state.dtype)
        own = None  # the reference's arrays, not held past their rounding below
        try:
            trainer.load_state(resume)
        except StateNotLoadable as exc:
            self.warning = f"not resynchronised from step {t}: {exc}"
            return None
        # The reference steps from the very state the port was given: in a float32 cell its
        # state rounded to float32 (measured: held to the unrounded state's step instead, a
        # correct torch.compile port left the one-step tolerance by 1.01x at step 7 of seed 3,
        # the rounding of the loaded state being no part of what the tolerance bounds). In a
        # float64 cell that is the state it holds already.
        if self.state.dtype != "float64":
            # its last record was compared at the last step: its parameters and gradients
            # (170 MB in resnet18) need not outlive the rounding
            check.reference.last = None
            check.reference.round_state(self.state.dtype)
        with clock("calibration"):
            return calibrate_resynced(
                self.spec, check.start, self.seed, check.variant, resume, self.store
            )

    def not_followed(self, check: Check) -> str:
        if check.label == "reference":
            return (
                "the port is resynchronised to the declared explanation's reference variant "
                "from here (the reference's own comparison had decided: it diverged)"
            )
        return "the port is resynchronised to the plain reference from here, not to this variant"


@dataclass
class Keep:
    """What the lockstep keeps beside the comparisons: the port's losses, its first and last
    records (None: not kept), its early records' fingerprints (the reproducibility check;
    None: not run), the first step's time, the step log (digests) and each check's values at
    its first divergence (what a failing cell's trajectory file holds)."""

    losses: np.ndarray
    snapshots: dict[str, StepRecord] | None
    early: list[tuple] | None
    timing: dict[str, float]
    log: StepLog | None = None
    #: None: nothing kept (no failing cell's arrays will be written)
    at_divergence: dict[str, tuple[dict, dict]] | None = None
    #: keep the diverging quantity alone, not every quantity of the step (a model past
    #: ``TRAJECTORY_MAX_PARAMETERS``: resnet18's two records are 340 MB in float64)
    diverging_only: bool = False


def _lockstep(trainer, checks, backend, steps, keep: Keep, resync=None, clock=None) -> None:
    """The port's steps, each followed by the reference's and the comparisons. Within the
    lockstep phase, the harness's own work is timed apart, so that ``lockstep`` is the port's:
    the reference's steps as ``reference``, the comparisons, the step log and resynchronising
    as ``compare``."""
    losses, snapshots, early, timing = keep.losses, keep.snapshots, keep.early, keep.timing
    clock = clock or PhaseClock({})
    for t in range(steps):
        one_step = None
        if resync is not None:
            with clock(COMPARE):
                one_step = resync.step(trainer, checks, t, clock)
        tick = time.perf_counter()
        trainer.run_step()
        backend.synchronize()
        if t == 0:
            timing["first_call"] = time.perf_counter() - tick
        record = trainer.record()
        losses[t] = record.loss
        if snapshots is not None:
            snapshots.setdefault("first", record)
            snapshots["last"] = record
        with clock(COMPARE):
            record = contiguous_arrays(record)
            # a fresh run steps freely: only the steps before the first resynchronised one can
            # be repeated bit for bit (resnet18's float32 cells resynchronise from step 2;
            # their steps 2-4 were held to a free rerun's and read as not reproducible)
            if early is not None and one_step is None and len(early) == t < REPRODUCIBILITY_STEPS:
                early.append(fingerprint(record))
            if keep.log is not None:
                keep.log.add(record)
            for check in checks:
                if not check.active:
                    continue
                with clock(REFERENCE):
                    check.reference.run_step()
                    ref = check.reference.record()
                if one_step is not None and check is resync.followed:
                    check.comparison.add_resynced(t, record, ref, one_step)
                else:
                    check.active = check.comparison.add(t, record, ref)
                div = check.comparison.first_divergence
                kept = keep.at_divergence
                if (
                    div is not None
                    and div.step == t
                    and kept is not None
                    and check.label not in kept
                ):
                    kept[check.label] = _values_at(div, record, ref, keep.diverging_only)
                if not check.active:  # decided: its trainer goes now, not with the cell's
                    check.release()
        # not held through the next step (a resnet18 record is 180 MB in float64)
        record = ref = None
        if not any(c.active for c in checks):
            return


#: a trajectory keeps the parameter snapshots (initial, first and last step's parameters and
#: gradients: five copies) of models up to this many parameters; resnet18's 11.2M would make
#: 450 MB a float64 cell, 11 GB a run
TRAJECTORY_MAX_PARAMETERS = 1_000_000


def _too_large(state) -> bool:
    return sum(v.size for v in state.params.values()) > TRAJECTORY_MAX_PARAMETERS


def _values_at(div, record, ref, diverging_only: bool) -> tuple[dict, dict]:
    """The port's and the reference's values at a check's first divergence, as
    ``_divergence_arrays`` writes them: every quantity both have, or the diverging one alone."""
    got, want = record_values(record), record_values(ref)
    keys = [k for k in got if k in want]
    if diverging_only:
        key = div.quantity if div.name is None else f"{div.quantity}/{div.name}"
        keys = [k for k in keys if k == key]
    return {k: got[k] for k in keys}, {k: want[k] for k in keys}


def _divergence_arrays(state, losses, div, values) -> dict[str, np.ndarray]:
    """A failing cell's arrays where a person needs them: the data, the losses, and the port's
    and the reference's values of every quantity at the first diverging step (of the
    diverging quantity alone in a model past ``TRAJECTORY_MAX_PARAMETERS``: ``_values_at``)."""
    out: dict[str, np.ndarray] = {f"data/{k}": v for k, v in state.data.items()}
    out["losses"] = losses
    if div is None or values is None:
        return out
    got, want = values
    keys = list(got)
    out["divergence/step"] = np.array(div.step)
    out.update({f"divergence/implementation/{k}": np.asarray(got[k]) for k in keys})
    out.update({f"divergence/reference/{k}": np.asarray(want[k]) for k in keys})
    return out


def _trajectory(state, losses, comparison, snapshots) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    out.update({f"data/{k}": v for k, v in state.data.items()})
    out["losses"] = losses
    if comparison.branches_impl:
        out["branches"] = np.array([b or "" for b in comparison.branches_impl])
    if snapshots is None:
        out["omitted"] = np.array(
            f"parameter snapshots: more than {TRAJECTORY_MAX_PARAMETERS:,} parameters"
        )
        return out
    out.update({f"init/{k}": v for k, v in state.params.items()})
    for which, rec in snapshots.items():
        out.update({f"{which}/grads/{k}": v for k, v in rec.grads.items()})
        out.update({f"{which}/params/{k}": v for k, v in rec.params.items()})
    return out
