"""Selecting cells and running a selection, in-process or in per-backend worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from equiv.case import all_cases
from equiv.records import DTYPES, Cell, CellResult
from equiv.registry import all_backends
from equiv.runner import RunOptions, run_cell
from equiv.workers import run_group


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
    case_names = _check("case", cases, list(all_cases()))
    backend_ids = _check("backend", backends, list(all_backends()))
    dtype_names = _check("dtype", dtypes, list(DTYPES))
    return [Cell(c, b, d) for d in dtype_names for c in case_names for b in backend_ids]


@dataclass
class Progress:
    """How far a run is. On a terminal: one bar, redrawn in place, with the tally so far and the
    cell being run, plus a kept line for each cell that is not a pass (so problems stay on
    screen). Elsewhere (CI logs, pipes): one plain line per finished cell, nothing redrawn."""

    total: int
    emit: Callable[[str], None] = print
    done: int = 0
    #: where the bar goes (default: sys.stderr)
    stream: object = None
    #: draw a bar; None: when ``stream`` is a terminal (and TERM is not "dumb")
    bar: bool | None = None
    counts: dict[str, int] | None = None
    current: str = ""

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

    def start(self, cell: Cell) -> None:
        self.current = cell.id
        if self.bar:
            self._draw()

    def finish(self, result: CellResult) -> None:
        self.done += 1
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        detail = f" - {result.reason}" if result.reason and result.status != "pass" else ""
        line = (
            f"[{self.done}/{self.total}] {result.cell.id}: {result.status}"
            f" ({result.duration_s:.1f}s){detail}"
        )
        if not self.bar:
            self.emit(line)
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
        if tally:
            text += f"  {tally}"
        if self.current:
            text += f"  running {self.current}"
        self.stream.write("\r" + text[: columns - 1] + "\x1b[K")
        self.stream.flush()


def run_cells(
    cells: Sequence[Cell], options: RunOptions, isolate: str = "backend", progress=None
) -> list[CellResult]:
    """Run every cell; cells of a backend that needs its own process always get one."""
    backends = all_backends()
    results: list[CellResult] = []

    def collect(stream: Iterable[CellResult]) -> None:
        for result in stream:
            results.append(result)
            if progress:
                progress.finish(result)

    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(cell.backend, []).append(cell)
    for backend_id, group in groups.items():
        backend = backends[backend_id]
        reason = backend.availability()
        if reason:  # no need to start a process to learn that
            collect(CellResult(cell=c, status="skip", reason=reason) for c in group)
        elif isolate == "backend" or backend.needs_own_process:
            jobs = [(c, None) for c in group]
            on_start = progress.start if progress else None
            collect(run_group(jobs, options, env=dict(backend.worker_env), on_start=on_start))
        else:
            collect(run_cell(c, options) for c in group)
    return results
