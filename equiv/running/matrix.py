"""Selecting cells and running a selection, in-process or in per-backend worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from equiv.backends.implementations import ImplSource
from equiv.backends.registry import all_backends, get_backend
from equiv.contract.case import case_catalog, unavailable_cases
from equiv.contract.records import DTYPES, Cell, CellResult
from equiv.running.runner import RunOptions, run_cell
from equiv.running.workers import Group, Recycle, WorkerPool, run_group


class SelectionError(ValueError):
    """An unknown case, backend or dtype; the message names the valid ones."""


def _check(kind: str, asked: Sequence[str], valid: Sequence[str]) -> list[str]:
    unknown = [a for a in asked if a not in valid]
    if unknown:
        raise SelectionError(
            f"unknown {kind} {', '.join(map(repr, unknown))}; valid {kind}s: {', '.join(valid)}"
        )
    return list(asked) or list(valid)


def select_cells(
    cases: Sequence[str] = (), backends: Sequence[str] = (), dtypes: Sequence[str] = ()
) -> list[Cell]:
    # unavailable case packages are selectable: their cells skip with the reason
    case_names = _check("case", cases, case_catalog().names())
    backend_ids = _check("backend", backends, list(all_backends()))
    dtype_names = _check("dtype", dtypes, list(DTYPES))
    return [Cell(c, b, d) for d in dtype_names for c in case_names for b in backend_ids]


class RunProgress(Protocol):
    """What ``run_cells`` tells as it runs (``equiv.cli.progress.Progress`` prints it)."""

    def start(self, cell: Cell) -> None: ...

    def phase(self, cell: Cell, phase: str) -> None: ...

    def finish(self, result: CellResult) -> None: ...

    def worker_output(self, line: str) -> None:
        """A line a worker process wrote to its stderr (its frameworks' banners left out)."""


def run_cells(
    cells: Sequence[Cell],
    options: RunOptions,
    isolate: str = "backend",
    progress: RunProgress | None = None,
    jobs: int = 1,
    estimate: Callable[[Cell], float] | None = None,
    on_result: Callable[[CellResult], None] | None = None,
    recycle: Recycle | None = None,
    executor: str = "local",
) -> list[CellResult]:
    """Run every cell; cells of a backend that needs its own process always get one.

    Each backend's cells form a group run by one worker; up to ``jobs`` groups run at once,
    the longest first (by ``estimate``), so that a long group does not start last.
    ``executor="ray"``: every cell is a task on the Ray cluster ``ray_executor.connect``
    joined, the longest first; ``jobs`` and ``isolate`` do not apply there."""
    backends = all_backends()
    results: list[CellResult] = []

    def collect(stream: Iterable[CellResult]) -> None:
        for result in stream:
            if on_result:
                on_result(result)
            results.append(result)
            if progress:
                progress.finish(result)

    by_backend: dict[str, list[Cell]] = {}
    broken_cases = unavailable_cases()
    for cell in cells:
        if cell.case in broken_cases:  # a case package that failed to load: no process needed
            collect([CellResult(cell=cell, status="skip", reason=broken_cases[cell.case].reason)])
        else:
            by_backend.setdefault(cell.backend, []).append(cell)
    in_process: list[Cell] = []
    groups: list[Group] = []
    for backend_id, group in by_backend.items():
        backend = backends[backend_id]
        reason = backend.availability()
        if reason:  # no need to start a process to learn that
            collect(CellResult(cell=c, status="skip", reason=reason) for c in group)
        elif executor == "ray" or isolate == "backend" or backend.needs_own_process:
            jobs_of = [(c, None) for c in group]
            groups.append(Group(jobs_of, dict(backend.worker_env), backend.worker_hides))
        else:
            in_process.extend(group)
    if executor == "ray":
        from equiv.running.ray_executor import run_on_ray

        tasks = [(c, impl, g.env, g.hides) for g in groups for c, impl in g.jobs]
        if estimate:
            tasks.sort(key=lambda t: -estimate(t[0]))
        on_start = progress.start if progress else None
        max_cells = recycle.max_cells if recycle else None
        collect(run_on_ray(tasks, options, on_start=on_start, max_cells=max_cells))
        return results
    if estimate:
        groups.sort(key=lambda g: -sum(estimate(c) for c, _ in g.jobs))
    collect(_in_process(in_process, options, progress))
    pool = WorkerPool(
        options,
        jobs=jobs,
        recycle=recycle,
        on_start=progress.start if progress else None,
        on_phase=progress.phase if progress else None,
        on_output=progress.worker_output if progress else None,
    )
    collect(pool.run(groups))
    return results


def _in_process(cells: list[Cell], options: RunOptions, progress) -> Iterable[CellResult]:
    for cell in cells:
        if progress:
            progress.start(cell)
        yield run_cell(
            cell, options, on_phase=(lambda p, c=cell: progress.phase(c, p)) if progress else None
        )


def run_one(cell: Cell, options: RunOptions, impl: ImplSource) -> CellResult:
    """One cell from ``impl`` (a planted bug's source, say), no benchmark: in a worker process
    of its own where its backend needs one (Keras's backend is fixed per process), else here."""
    backend = get_backend(cell.backend)
    if backend.needs_own_process:
        (result,) = run_group([(cell, impl)], options, env=dict(backend.worker_env))
        return result
    return run_cell(cell, options, impl=impl, benchmark=False)
