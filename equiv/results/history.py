"""How long each cell took last time: the order of a run's groups and its time-left estimate.

Kept beside the calibrations (``equiv.tolerance.store``) as one small JSON file. Only a
schedule and a progress estimate depend on it, never a verdict; a missing or unreadable file
means no history.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from equiv.contract.records import Cell, CellResult

FILE = "durations.json"
#: seconds assumed for a cell never run here before, when no other cell is known either
UNKNOWN_CELL_S = 10.0


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

    def estimate(self, cell: Cell) -> float:
        found = self.known.get(_key(cell, self.seed, self.steps))
        if found is not None:
            return found
        values = list(self.known.values())
        return sum(values) / len(values) if values else UNKNOWN_CELL_S

    def record(self, results: Iterable[CellResult]) -> None:
        """Remember this run's durations (finished cells only); a failed write is ignored."""
        for r in results:
            if r.status in ("pass", "fail", "explained", "error"):
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
