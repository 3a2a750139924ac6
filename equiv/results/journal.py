"""DIR/journal.jsonl: what a run has finished, kept as it finishes, so a cut-off run loses
nothing and ``equiv run --resume DIR`` runs only what is missing.

Append-only JSON lines: first the run's header (its settings and the cells it plans to run),
then one line per finished cell, the cell's entry in ``parity.json`` exactly. Each line is
flushed and fsynced before the next cell is reported; a line cut short by a kill is ignored
when the journal is read back (its cell is simply run again). A completed run removes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equiv.contract.records import CellResult
from equiv.results.document import json_safe

NAME = "journal.jsonl"
VERSION = 1


class JournalError(ValueError):
    """A journal that cannot be resumed (missing, foreign or damaged); one line for the user."""


@dataclass
class JournalContents:
    settings: dict[str, Any]
    planned: list[str]
    #: finished cells' parity.json entries, by cell id (the last line wins)
    done: dict[str, dict[str, Any]]

    @property
    def missing(self) -> list[str]:
        return [cell_id for cell_id in self.planned if cell_id not in self.done]


class Journal:
    """The writer: created (truncated) when a run starts, or reopened by ``--resume``."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    @classmethod
    def start(cls, out: Path, settings: dict[str, Any], planned: list[str]) -> Journal:
        path = Path(out) / NAME
        header = {"journal": VERSION, "settings": settings, "planned": planned}
        path.write_text(json.dumps(header, allow_nan=False) + "\n", encoding="utf-8")
        return cls(path)

    @classmethod
    def reopen(cls, out: Path) -> Journal:
        """Drops a last line a kill cut short, so the next line starts a line of its own."""
        path = Path(out) / NAME
        with open(path, "rb+") as raw:
            text = raw.read()
            if text and not text.endswith(b"\n"):
                raw.truncate(text.rfind(b"\n") + 1)
        return cls(path)

    def append(self, result: CellResult) -> dict[str, Any]:
        entry = json_safe(result.to_json())
        self._file.write(json.dumps(entry, separators=(",", ":"), allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        return entry

    def close(self) -> None:
        self._file.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def read(out: Path) -> JournalContents:
    path = Path(out) / NAME
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise JournalError(
            f"{path} not found: nothing to resume (a completed run removes its journal)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JournalError(f"cannot read {path}: {exc}") from None
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("journal") != VERSION:
        raise JournalError(f"{path} is not an equiv run journal (version {VERSION})")
    planned = header.get("planned")
    if not isinstance(planned, list) or not isinstance(header.get("settings"), dict):
        raise JournalError(f"{path}: its header has no settings or planned cells")
    done: dict[str, dict[str, Any]] = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a kill cut short: that cell runs again
        if isinstance(entry, dict) and entry.get("id") in planned:
            done[entry["id"]] = entry
    return JournalContents(header["settings"], planned, done)
