"""How long each cell took last time: the order of a run's groups and its time-left estimate.

Kept beside the calibrations (``equiv.tolerance.store``) as one small JSON file. Only a
schedule and a progress estimate depend on it, never a verdict; a missing or unreadable file
means no history.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from equiv.contract.records import Cell, CellResult

FILE = "durations.json"
#: seconds assumed for a cell never run here before, when no other cell is known either
UNKNOWN_CELL_S = 10.0
#: statuses whose duration is the cell's cost (a skip's ~0 s included, so it is not guessed at
#: the average next time); a timeout's record holds no duration
RECORDED = ("pass", "fail", "explained", "error", "skip")


def _key(cell: Cell, seed: int, steps: int | None) -> str:
    return f"{cell.id}|seed={seed}|steps={steps if steps is not None else 'default'}"


class Durations:
    def __init__(self, directory: str | os.PathLike[str] | None, seed: int, steps: int | None):
        self.path = Path(directory) / FILE if directory else None
        self.seed, self.steps = seed, steps
        self.known: dict[str, float] = {}
        if self.path is not None:
            try:
                loaded = json.loads(self.path.read_text())
                self.known = {k: float(v) for k, v in loaded.items()}
            except (OSError, ValueError, TypeError, AttributeError):
                self.known = {}

    def last(self, cell: Cell) -> float | None:
        """The cell's duration last time with this seed and step count; None if never run so."""
        return self.known.get(_key(cell, self.seed, self.steps))

    def typical(self) -> float | None:
        """The mean of every duration known (other seeds and step counts too); None if none."""
        values = list(self.known.values())
        return sum(values) / len(values) if values else None

    def estimate(self, cell: Cell) -> float:
        found = self.last(cell)
        if found is not None:
            return found
        typical = self.typical()
        return typical if typical is not None else UNKNOWN_CELL_S

    def record(self, results: Iterable[CellResult]) -> None:
        """Remember this run's durations (finished cells only); a failed write is ignored."""
        for r in results:
            if r.status in RECORDED:
                self.known[_key(r.cell, self.seed, self.steps)] = round(r.duration_s, 3)
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".durations.", dir=self.path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump(self.known, f, indent=0, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            pass


#: how many seconds of cells the history's durations weigh, against this run's measurements:
#: a few finished cells that run slower (a loaded machine) or faster than last time outweigh it
PRIOR_WEIGHT_S = 3.0


def time_left(
    unfinished: Sequence[Cell],
    finished: Sequence[tuple[Cell, float]],
    last: Callable[[Cell], float | None],
    *,
    running: Mapping[Cell, float] | None = None,
    jobs: int = 1,
    typical: float | None = None,
) -> float | None:
    """Seconds until ``unfinished`` cells are done; None while there is nothing to go on.

    Why not the history alone: the last run's durations (``last``) were measured with another
    load on the machine, or are missing (another step count). So this run's ``finished``
    cells ((cell, seconds) each) scale them: a backend's cells by how much slower or faster
    its finished cells ran than last time (a backend with none yet, by all finished cells'
    factor), and a cell never run before costs the mean of its backend's finished cells (or
    all finished cells, or ``typical``). A skipped cell costs what it took, ~0 s.

    ``running`` maps a started cell to the seconds it has run; it is charged only what is
    left of its estimate. Each backend's cells run one after another in one worker, up to
    ``jobs`` workers at once: the time left is that of the busiest worker when the backends
    already started keep their workers and the rest go, longest first, to the least busy (as
    ``equiv.running.matrix.run_cells`` orders them)."""
    running = running or {}
    measured: dict[str, list[float]] = {}
    prior_s: dict[str, float] = {}
    actual_s: dict[str, float] = {}
    for cell, seconds in finished:
        measured.setdefault(cell.backend, []).append(seconds)
        before = last(cell)
        if before is not None:
            prior_s[cell.backend] = prior_s.get(cell.backend, 0.0) + before
            actual_s[cell.backend] = actual_s.get(cell.backend, 0.0) + seconds
    overall = (sum(actual_s.values()) + PRIOR_WEIGHT_S) / (sum(prior_s.values()) + PRIOR_WEIGHT_S)
    everything = [s for values in measured.values() for s in values]

    def estimate(cell: Cell) -> float | None:
        before = last(cell)
        if before is not None:
            b = cell.backend
            factor = (actual_s.get(b, 0.0) + PRIOR_WEIGHT_S * overall) / (
                prior_s.get(b, 0.0) + PRIOR_WEIGHT_S
            )
            return before * factor
        same = measured.get(cell.backend) or everything
        return sum(same) / len(same) if same else typical

    work: dict[str, float] = {}
    for cell in unfinished:
        seconds = estimate(cell)
        if seconds is None:
            return None
        if cell in running:
            seconds = max(0.0, seconds - running[cell])
        work[cell.backend] = work.get(cell.backend, 0.0) + seconds
    busy = {cell.backend for cell in running} | set(measured)
    started = sorted((s for b, s in work.items() if b in busy), reverse=True)
    waiting = sorted((s for b, s in work.items() if b not in busy), reverse=True)
    workers = [0.0] * max(1, jobs)
    for seconds in started + waiting:
        workers[workers.index(min(workers))] += seconds
    return max(workers)
