"""Running one cell: seed, build, step in lockstep with the reference, compare, benchmark.

``run_cell`` never raises for a problem of the implementation: exceptions, NaN and wrong shapes
become an ``error`` verdict, so one bad cell cannot take a run down. Process isolation (crashes,
hangs, per-process settings such as ``KERAS_BACKEND``) is ``equiv.workers``'s job.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from equiv.backends.base import Backend, CellSkip
from equiv.bench import benchmark_steps
from equiv.case import get_case
from equiv.compare import Comparison, NonFinite, ShapeMismatch
from equiv.implementations import ImplSource
from equiv.records import Cell, CellResult, StepRecord
from equiv.reference import ReferenceTrainer
from equiv.registry import get_backend
from equiv.tolerance import calibrate


@dataclass(frozen=True)
class RunOptions:
    seed: int = 0
    steps: int | None = None  # None: each case's own default (the seed's step count)
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    bench_rounds: int = 30
    bench_warmup: int = 3
    timeout_s: float = 900.0
    keep_trajectories: bool = True

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


def run_cell(
    cell: Cell,
    options: RunOptions,
    impl: ImplSource | None = None,
    bench_fixture=None,
    benchmark: bool = True,
) -> CellResult:
    started = time.perf_counter()
    steps = options.steps_for(cell.case)
    result = CellResult(cell=cell, status="error", steps=steps)
    try:
        backend = get_backend(cell.backend)
        reason = backend.availability()
        if reason:
            result.status, result.reason = "skip", reason
            return result
        _run(cell, backend, options, steps, impl, bench_fixture, benchmark, result)
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
    return result


def _run(cell, backend, options, steps, impl, bench_fixture, benchmark, result) -> None:
    spec = get_case(cell.case)
    configure_process(options.threads)
    _configure_backend(backend, options.threads)
    state = spec.make_state(options.seed, cell.dtype)
    calibration = calibrate(spec, options.seed, steps, cell.dtype)
    source = impl or ImplSource(backend.implementation_module(spec))
    try:
        module = source.load()
    except ModuleNotFoundError as exc:
        if exc.name and source.module.startswith(exc.name):
            raise CellSkip(f"{backend.id} has no implementation of {spec.name}: {exc.name}") from exc
        raise
    traces_before = backend.traces
    trainer = backend.build_trainer(spec, state, module)
    reference = ReferenceTrainer(spec, state.astype("float64"))
    comparison = Comparison(spec, calibration, cell.dtype)
    losses = np.full(steps, np.nan)
    snapshots: dict[str, StepRecord] = {}
    timing = {"first_call": 0.0}
    # numpy's BLAS threads and the framework's OpenMP threads spin-wait on each other when they
    # alternate step by step (measured: 13x slower); the parity phase gives numpy one thread.
    with threadpool_limits(limits=1, user_api="blas"):
        _lockstep(trainer, reference, backend, comparison, steps, losses, snapshots, timing)
    first_call = timing["first_call"]
    result.traces = backend.traces - traces_before if backend.compiled else None
    result.compared_steps = comparison.compared
    result.max_error = comparison.max_error
    result.max_ratio = comparison.max_ratio
    result.first_divergence = comparison.first_divergence
    result.branches = comparison.branch_summary()
    result.series = comparison.series()
    result.warnings = list(comparison.warnings)
    if (
        result.traces is not None
        and result.compared_steps > 2
        and result.traces >= result.compared_steps
    ):
        result.warnings.append(
            f"retraced on every step: {result.traces} traces or compilations in "
            f"{result.compared_steps} steps"
        )
    if comparison.first_divergence is not None:
        result.status = "fail"
        result.reason = describe_divergence(comparison.first_divergence)
    else:
        result.status = "pass"
        result.reason = ""
    if options.keep_trajectories:
        result.trajectory = _trajectory(state, losses, comparison, snapshots)
    result.benchmark = {"first_call_s": first_call}
    if benchmark and options.bench_rounds > 0:

        def one_step():
            trainer.run_step()
            backend.synchronize()

        timed = benchmark_steps(
            one_step,
            rounds=options.bench_rounds,
            warmup_rounds=options.bench_warmup,
            fixture=bench_fixture,
            name=cell.id,
        )
        if timed:
            result.benchmark.update(timed)
            flops = spec.flops_per_step(state.config) if spec.flops_per_step else None
            if flops:
                result.benchmark["flops_per_step"] = flops
                result.benchmark["gflops"] = flops / timed["median_s"] / 1e9


def _lockstep(trainer, reference, backend, comparison, steps, losses, snapshots, timing) -> None:
    for t in range(steps):
        tick = time.perf_counter()
        trainer.run_step()
        backend.synchronize()
        if t == 0:
            timing["first_call"] = time.perf_counter() - tick
        record = trainer.record()
        reference.run_step()
        losses[t] = record.loss
        if t == 0:
            snapshots["first"] = record
        snapshots["last"] = record
        if not comparison.add(t, record, reference.record()):
            return


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
