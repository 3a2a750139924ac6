"""Running one cell: seed, build, step in lockstep with the reference, compare, benchmark.

``run_cell`` never raises for a problem of the implementation: exceptions, NaN and wrong shapes
become an ``error`` verdict, so one bad cell cannot take a run down. Process isolation (crashes,
hangs, per-process settings such as ``KERAS_BACKEND``) is ``equiv.workers``'s job.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from equiv.backends.base import Backend, CellSkip
from equiv.bench import benchmark_steps
from equiv.calibration_store import CalibrationStore
from equiv.case import Explanation, combine_explanations, get_case
from equiv.compare import Comparison, NonFinite, ShapeMismatch
from equiv.implementations import ImplSource
from equiv.records import CaseState, Cell, CellResult, StepRecord
from equiv.reference import ReferenceTrainer
from equiv.registry import get_backend
from equiv.tolerance import calibrate, calibrate_state


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
    keep_trajectories: bool = True
    #: where calibrations are shared (``equiv.calibration_store``); None: this process only
    calibration_dir: str | None = None

    def steps_for(self, case: str) -> int:
        return self.steps if self.steps is not None else get_case(case).default_steps


_configured: set[tuple[str, int]] = set()


def configure_process(threads: int) -> None:
    """Same thread count for numpy's BLAS as for every framework (set per backend)."""
    from threadpoolctl import threadpool_limits

    if ("numpy", threads) not in _configured:
        threadpool_limits(limits=threads)
        _configured.add(("numpy", threads))


def _configure_backend(backend: Backend, threads: int) -> None:
    key = (backend.id, threads)
    if key not in _configured:
        backend.configure(threads)
        _configured.add(key)


def describe_divergence(div: dict[str, Any]) -> str:
    where = f"step {div['step']}, {div['quantity']}"
    if div.get("name"):
        where += f" {div['name']}"
    if "error" in div:
        return (
            f"first divergence at {where} ({div['phase']}): "
            f"error {div['error']:.3g} > tolerance {div['tolerance']:.3g}"
        )
    return f"first divergence at {where}: {div.get('detail', '')}"


#: wraps a cell's benchmark; a worker process uses it to have every other worker paused
Exclusive = Callable[[], AbstractContextManager[None]]


class PhaseClock:
    """Wall time per phase of a cell (``CellResult.phases_s``), for the harness's own
    benchmark and for progress: imports, calibration, lockstep, benchmark, extras."""

    def __init__(self, totals: dict[str, float], on_phase: Callable[[str], None] | None = None):
        self.totals = totals
        self.on_phase = on_phase

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        if self.on_phase:
            self.on_phase(phase)
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.totals[phase] = self.totals.get(phase, 0.0) + time.perf_counter() - tick


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
    try:
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
        result.first_divergence = {"step": exc.step, "quantity": "non-finite", "name": exc.key}
    except ShapeMismatch as exc:
        result.status, result.reason = "error", f"wrong array shape: {exc}"
    except Exception as exc:
        result.status = "error"
        result.reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        result.traceback = traceback.format_exc()
    finally:
        result.duration_s = time.perf_counter() - started
        result.peak_rss_mb = peak_rss_mb()
    return result


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far (None where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


@dataclass
class Check:
    """One reference the implementation is compared with, in lockstep."""

    label: str
    reference: ReferenceTrainer
    comparison: Comparison
    active: bool = True


REPRODUCIBILITY_STEPS = 5


@dataclass(frozen=True)
class BenchPlan:
    """Whether and how a cell's steps are timed: ``fixture`` is pytest's own benchmark fixture
    (inside pytest), ``exclusive`` what makes the timing the only work on the machine."""

    enabled: bool
    fixture: Any = None
    exclusive: Exclusive = contextlib.nullcontext


def _run(cell, backend, options, steps, impl, bench: BenchPlan, result, clock) -> None:
    spec = get_case(cell.case)
    with clock("imports"):  # the first cell of a process imports its framework here
        configure_process(options.threads)
        _configure_backend(backend, options.threads)
        source = impl or ImplSource(backend.implementation_module(spec))
        try:
            module = source.load()
        except ModuleNotFoundError as exc:
            if exc.name and source.module.startswith(exc.name):
                missing = f"{backend.id} has no implementation of {spec.name}: {exc.name}"
                raise CellSkip(missing) from exc
            raise
    state = spec.make_state(options.seed, cell.dtype)
    store = CalibrationStore(options.calibration_dir) if options.calibration_dir else None
    with clock("calibration"):
        checks = [_check("reference", spec, state, options.seed, steps, (), store)]
        explanation = declared_explanation(spec, backend, cell.dtype)
        if explanation:
            variant = explanation.variant_key()
            checks.append(_check("variant", spec, state, options.seed, steps, variant, store))

    traces_before = backend.traces
    losses = np.full(steps, np.nan)
    snapshots: dict[str, StepRecord] = {}
    early: list[StepRecord] = []
    timing = {"first_call": 0.0}
    # numpy's BLAS threads and the framework's OpenMP threads spin-wait on each other when they
    # alternate step by step (measured: 13x slower); the parity phase gives numpy one thread.
    with clock("lockstep"):
        trainer = backend.build_trainer(spec, state, module)
        with threadpool_limits(limits=1, user_api="blas"):
            _lockstep(trainer, checks, backend, steps, losses, snapshots, early, timing)
    result.traces = backend.traces - traces_before if backend.compiled else None

    main = checks[0].comparison
    result.compared_steps = main.compared
    result.max_error = main.max_error
    result.max_ratio = main.max_ratio
    result.first_divergence = main.first_divergence
    result.branches = main.branch_summary()
    result.series = main.series()
    result.warnings = list(main.warnings)
    if result.traces is not None and main.compared > 2 and result.traces >= main.compared:
        result.warnings.append(
            f"retraced on every step: {result.traces} traces or compilations in "
            f"{main.compared} steps"
        )
    if result.traces == 0:
        result.warnings.append("a compiled mode recorded no trace: it may have run eagerly")
    _verdict(result, checks, explanation)
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
    with clock("extras"), threadpool_limits(limits=1, user_api="blas"):
        if result.status == "fail":
            result.extra["localization"] = _localize(spec, backend, module, state, main)
        result.extra["reproducible"] = _reproducible(spec, backend, module, state, early)
        if options.keep_trajectories:
            result.trajectory = _trajectory(state, losses, main, snapshots)


def declared_explanation(spec, backend: Backend, dtype: str) -> Explanation | None:
    found = spec.explanations_for(backend.id, dtype) + [
        e for e in backend.explanations if e.applies_to(backend.id, spec.name, dtype)
    ]
    return combine_explanations(found)


def _check(label, spec, state, seed, steps, variant, store=None) -> Check:
    start = state if not variant else spec.make_state(seed, state.dtype, variant)
    calibration = calibrate(spec, seed, steps, state.dtype, variant, store)
    return Check(
        label,
        ReferenceTrainer(spec, start.astype("float64")),
        Comparison(spec, calibration, state.dtype),
    )


def _lockstep(trainer, checks, backend, steps, losses, snapshots, early, timing) -> None:
    for t in range(steps):
        tick = time.perf_counter()
        trainer.run_step()
        backend.synchronize()
        if t == 0:
            timing["first_call"] = time.perf_counter() - tick
        record = trainer.record()
        losses[t] = record.loss
        if t == 0:
            snapshots["first"] = record
        snapshots["last"] = record
        if t < REPRODUCIBILITY_STEPS:
            early.append(record)
        for check in checks:
            if check.active:
                check.reference.run_step()
                check.active = check.comparison.add(t, record, check.reference.record())
        if not any(c.active for c in checks):
            return


def _verdict(result: CellResult, checks: list[Check], explanation) -> None:
    main = checks[0].comparison
    if main.first_divergence is None:
        result.status, result.reason = "pass", ""
        if explanation:
            result.warnings.append(
                "a difference is declared for this backend but it matches the reference: "
                "the declaration may be out of date"
            )
        return
    result.status = "fail"
    result.reason = describe_divergence(main.first_divergence)
    if not explanation:
        return
    variant = checks[1].comparison
    # The same rule as for ``pass``: no divergence; a comparison that stopped where the branch
    # decision was numerically ambiguous at the variant's precision is not one, and is warned.
    proved = variant.first_divergence is None
    result.warnings += [f"reference variant: {w}" for w in variant.warnings]
    result.extra["explanation"] = {
        "reason": explanation.reason,
        "variant": explanation.variant,
        "proved": proved,
        "reference": {"max_ratio": main.max_ratio, "first_divergence": main.first_divergence},
        "variant_result": {
            "max_ratio": variant.max_ratio,
            "max_error": variant.max_error,
            "compared_steps": variant.compared,
            "first_divergence": variant.first_divergence,
            "stopped_at": variant.stopped_at,
        },
    }
    if proved:
        result.status = "explained"
        precision = explanation.variant.get("compute_dtype")
        held_to = f"at {precision} precision " if precision else ""
        stopped = (
            f", up to a numerically ambiguous branch at step {variant.stopped_at}"
            if variant.stopped_at is not None
            else ""
        )
        result.reason = (
            f"{explanation.reason}. Proof: the reference variant {explanation.variant} matches "
            f"{held_to}(max {max(variant.max_ratio.values(), default=0):.2g} of tolerance over "
            f"{variant.compared} steps{stopped}) where the reference does not "
            f"({describe_divergence(main.first_divergence)})"
        )
    else:
        result.reason += (
            f"; the declared explanation ({explanation.reason}) does not account for it: "
            + describe_divergence(variant.first_divergence)
        )


def _localize(spec, backend, module, state, main: Comparison) -> dict[str, Any]:
    """Name the phase that disagrees first and tell a one-step bug from accumulated drift by
    re-running the failing step from the reference's own state (teacher forcing)."""
    div = main.first_divergence
    out: dict[str, Any] = {
        "step": div["step"],
        "phase": div.get("phase", div["quantity"]),
        "quantity": div["quantity"],
        "name": div.get("name"),
    }
    step = div["step"]
    if step == 0:
        out["teacher_forced"] = None
        out["diagnosis"] = f"wrong at the very first step, in the {out['phase']} phase"
        return out
    if spec.config.get("optimizer", "sgd") != "sgd":
        out["teacher_forced"] = None
        out["diagnosis"] = (
            f"first wrong at step {step} ({out['phase']}); not teacher-forced: the optimizer's "
            "state is not part of the canonical state"
        )
        return out
    reference = ReferenceTrainer(spec, state.astype("float64"))
    for _ in range(step):
        reference.run_step()
    config = dict(state.config)
    if spec.branching:
        config["initial_prev_loss"] = float(reference.prev_loss)
    forced = CaseState(
        data=state.data,
        params={k: v.astype(state.dtype) for k, v in reference.params.items()},
        config=config,
        dtype=state.dtype,
    )
    check = Check(
        "teacher-forced",
        ReferenceTrainer(spec, forced.astype("float64")),
        Comparison(spec, calibrate_state(spec, forced, 1), state.dtype),
    )
    trainer = backend.build_trainer(spec, forced, module)
    trainer.run_step()
    check.reference.run_step()
    check.comparison.add(0, trainer.record(), check.reference.record())
    again = check.comparison.first_divergence
    out["teacher_forced"] = {"from_step": step, "first_divergence": again}
    if again:
        out["diagnosis"] = (
            f"a one-step bug: started from the reference's own state at step {step}, the "
            f"implementation's {again.get('phase', again['quantity'])} phase disagrees at once"
        )
    else:
        out["diagnosis"] = (
            f"not a one-step bug: from the reference's state at step {step} the step is right; "
            "the divergence comes from state carried across steps (for example gradients that "
            "are not reset) or from drift accumulated over earlier steps"
        )
    return out


def _reproducible(spec, backend, module, state, early: list[StepRecord]) -> bool | None:
    """Whether a second, fresh run gives bitwise the same first steps."""
    if not early:
        return None
    trainer = backend.build_trainer(spec, state, module)
    for first in early:
        trainer.run_step()
        again = trainer.record()
        if not _bitwise_equal(first, again):
            return False
    return True


def _bitwise_equal(a: StepRecord, b: StepRecord) -> bool:
    if np.asarray(a.loss).tobytes() != np.asarray(b.loss).tobytes() or a.branch != b.branch:
        return False
    for group in ("grads", "params"):
        x, y = getattr(a, group), getattr(b, group)
        if x.keys() != y.keys():
            return False
        if any(np.asarray(x[k]).tobytes() != np.asarray(y[k]).tobytes() for k in x):
            return False
    return True


def _trajectory(state, losses, comparison, snapshots) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    out.update({f"data/{k}": v for k, v in state.data.items()})
    out.update({f"init/{k}": v for k, v in state.params.items()})
    out["losses"] = losses
    if comparison.branches_impl:
        out["branches"] = np.array([b or "" for b in comparison.branches_impl])
    for which, rec in snapshots.items():
        out.update({f"{which}/grads/{k}": v for k, v in rec.grads.items()})
        out.update({f"{which}/params/{k}": v for k, v in rec.params.items()})
    return out
