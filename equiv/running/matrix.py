"""Selecting cells and running a selection, in-process or in per-backend worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from equiv.backends.registry import all_backends
from equiv.contract.case import case_catalog, unavailable_cases
from equiv.contract.records import DTYPES, Cell, CellResult
from equiv.running.runner import RunOptions, run_cell
from equiv.running.workers import Group, WorkerPool


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


def fmt_left(seconds: float) -> str:
    if seconds < 60:
        return f"~{max(1, round(seconds))}s left"
    return f"~{seconds / 60:.0f}m left" if seconds >= 600 else f"~{seconds / 60:.1f}m left"


@dataclass
class Progress:
    """How far a run is. On a terminal: one bar, redrawn in place, with the tally so far, the
    time left and the cells being run with their phase, plus a kept line for each cell that is
    not a pass (so problems stay on screen). Elsewhere (CI logs, pipes): one plain line per
    finished cell, nothing redrawn.

    The time left comes from ``estimate`` (seconds per cell: the last run's,
    ``equiv.results.history``)
    for the cells in ``planned`` that have not finished, spread over ``jobs`` workers."""

    total: int
    emit: Callable[[str], None] = print
    done: int = 0
    #: where the bar goes (default: sys.stderr)
    stream: object = None
    #: draw a bar; None: when ``stream`` is a terminal (and TERM is not "dumb")
    bar: bool | None = None
    counts: dict[str, int] | None = None
    current: str = ""
    planned: Sequence[Cell] = ()
    estimate: Callable[[Cell], float] | None = None
    jobs: int = 1

    def __post_init__(self) -> None:
        import os
        import sys
        import time

        self.stream = self.stream if self.stream is not None else sys.stderr
        if self.bar is None:
            isatty = getattr(self.stream, "isatty", None)
            self.bar = bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
        self.counts = {} if self.counts is None else self.counts
        self._began = time.monotonic()
        self._running: dict[Cell, tuple[float, str]] = {}
        self._finished: set[Cell] = set()

    def start(self, cell: Cell) -> None:
        import time

        self.current = cell.id
        self._running[cell] = (time.monotonic(), "")
        if self.bar:
            self._draw()

    def phase(self, cell: Cell, phase: str) -> None:
        began, _ = self._running.get(cell, (0.0, ""))
        self._running[cell] = (began, phase)
        if self.bar:
            self._draw()

    def time_left(self) -> float | None:
        import time

        if self.estimate is None or not self.planned:
            return None
        now = time.monotonic()
        left = 0.0
        for cell in self.planned:
            if cell in self._finished:
                continue
            est = self.estimate(cell)
            if cell in self._running:
                est = max(0.0, est - (now - self._running[cell][0]))
            left += est
        return left / max(1, self.jobs)

    def finish(self, result: CellResult) -> None:
        self.done += 1
        self._running.pop(result.cell, None)
        self._finished.add(result.cell)
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        detail = f" - {result.reason}" if result.reason and result.status != "pass" else ""
        line = (
            f"[{self.done}/{self.total}] {result.cell.id}: {result.status}"
            f" ({result.duration_s:.1f}s){detail}"
        )
        left = self.time_left()
        if not self.bar:
            self.emit(line + (f"; {fmt_left(left)}" if left and self.done < self.total else ""))
            return
        self.current = ""
        if result.status != "pass":
            self.stream.write("\r\x1b[K" + line + "\n")
        self._draw()
        if self.done >= self.total:
            self.stream.write("\n")
        self.stream.flush()

    def _draw(self) -> None:
        import shutil
        import time

        columns = shutil.get_terminal_size((100, 24)).columns
        width = max(10, min(30, columns // 4))
        filled = round(width * self.done / self.total) if self.total else width
        tally = " ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        elapsed = time.monotonic() - self._began
        text = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {elapsed:.0f}s"
        left = self.time_left()
        if left:
            text += f" {fmt_left(left)}"
        if tally:
            text += f"  {tally}"
        running = [
            f"{cell.id}" + (f" ({phase})" if phase else "")
            for cell, (_, phase) in self._running.items()
        ]
        if running:
            text += "  running " + ", ".join(running)
        elif self.current:
            text += f"  running {self.current}"
        self.stream.write("\r" + text[: columns - 1] + "\x1b[K")
        self.stream.flush()


def run_cells(
    cells: Sequence[Cell],
    options: RunOptions,
    isolate: str = "backend",
    progress: Progress | None = None,
    jobs: int = 1,
    estimate: Callable[[Cell], float] | None = None,
    on_result: Callable[[CellResult], None] | None = None,
) -> list[CellResult]:
    """Run every cell; cells of a backend that needs its own process always get one.

    Each backend's cells form a group run by one worker; up to ``jobs`` groups run at once,
    the longest first (by ``estimate``), so that a long group does not start last."""
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
        elif isolate == "backend" or backend.needs_own_process:
            jobs_of = [(c, None) for c in group]
            groups.append(Group(jobs_of, dict(backend.worker_env), backend.worker_hides))
        else:
            in_process.extend(group)
    if estimate:
        groups.sort(key=lambda g: -sum(estimate(c) for c, _ in g.jobs))
    collect(_in_process(in_process, options, progress))
    pool = WorkerPool(
        options,
        jobs=jobs,
        on_start=progress.start if progress else None,
        on_phase=progress.phase if progress else None,
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
