"""parity.json: building, validating, and writing it atomically (with the trajectories).

Schema: see docs/parity-json.md. Writes go to a temporary file in the target folder and are
moved into place with ``os.replace``, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from equiv.contract.records import STATUSES, CellResult
from equiv.tolerance.policy import policy_summary

#: /2: cells carry ``digest``, and each cell that ran has its step records in DIR/steps; a
#: trajectory file only for a failing cell (or every cell with ``--keep-arrays``)
SCHEMA = "equiv.parity/2"
#: the versions this equiv reads (the report renders both; ``equiv diff`` pairs like with like)
READABLE = ("equiv.parity/1", SCHEMA)


def json_safe(value: Any) -> Any:
    """JSON has no Inf/NaN: write them as strings so the file stays standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (np.floating, np.integer)):
        return json_safe(value.item())
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def coverage(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """How much of the run was compared: steps compared over steps asked, over the cells that
    ran, and the cells that compared only part of theirs (issue 15: a stop at a numerically
    ambiguous branch, a divergence that ends the comparison, a crash)."""
    ran = [c for c in cells if isinstance(c.get("coverage"), (int, float))]
    # an explained cell's coverage is its proven variant's (``CellResult.coverage``)
    compared = sum(round(c["coverage"] * int(c.get("steps") or 0)) for c in ran)
    asked = sum(int(c.get("steps") or 0) for c in ran)
    return {
        "compared_steps": compared,
        "steps": asked,
        "fraction": compared / asked if asked else None,
        "partial": [c["id"] for c in ran if c["coverage"] < 1],
    }


def summarize(cells: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(c["status"] for c in cells)
    return {status: counts.get(status, 0) for status in STATUSES} | {"total": len(cells)}


def build_document(results: list[CellResult], environment: dict[str, Any], run: dict[str, Any]):
    return document_from_entries([r.to_json() for r in results], environment, run)


def document_from_entries(
    entries: list[dict[str, Any]],
    environment: dict[str, Any],
    run: dict[str, Any],
    incomplete: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The document from cells' entries (``CellResult.to_json``, or a journal's lines);
    ``incomplete`` marks a run that was cut off (docs/parity-json.md)."""
    cells = sorted(
        (json_safe(e) for e in entries), key=lambda c: (c["case"], c["backend"], c["dtype"])
    )
    document = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": environment,
        "run": run,
        "tolerance_policy": json_safe(policy_summary()),
        "summary": summarize(cells),
        "coverage": coverage(cells),
        "cells": cells,
    }
    if incomplete is not None:
        document["incomplete"] = incomplete
    return document


def _readable(tmp: str) -> None:
    """mkstemp makes 0600 files; a report should be as readable as any file the user writes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, document: dict[str, Any]) -> None:
    # Compact: a full run's document is half whitespace when indented (4.6 -> 2.3 MB); a
    # person reads it through the report, ``jq`` or ``python -m json.tool``.
    text = json.dumps(document, separators=(",", ":"), allow_nan=False)
    atomic_write_bytes(path, text.encode())


def write_trajectories(out_dir: Path, results: list[CellResult]) -> None:
    for r in results:
        write_trajectory(out_dir, r)


def cell_file(case: str, backend: str, dtype: str) -> str:
    """A cell's file name in DIR/trajectories and DIR/steps."""
    return f"{case}__{backend}__{dtype}.npz"


def write_trajectory(out_dir: Path, r: CellResult) -> None:
    """DIR/trajectories/<cell>.npz and DIR/steps/<cell>.npz, then the arrays are dropped from
    the result: a run writes each cell's as it finishes, so that a full run never holds all of
    them in memory."""
    name = cell_file(r.cell.case, r.cell.backend, r.cell.dtype)
    if r.trajectory:
        _write_npz(out_dir / "trajectories" / name, r.trajectory)
    if r.step_records:
        # compressed: 23% smaller (two_layer_mlp: 82 -> 63 kB), for little time at this size
        _write_npz(out_dir / "steps" / name, r.step_records, compressed=True)
    r.trajectory = r.step_records = None


def _write_npz(target: Path, arrays: dict[str, np.ndarray], compressed: bool = False) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part.", suffix=".npz", dir=target.parent)
    os.close(fd)
    try:
        # Trajectories are not compressed: random float mantissas shrink by ~8% for 25x the
        # time (measured: 2.31 -> 2.13 MB, 0.01 -> 0.25 s per cell).
        (np.savez_compressed if compressed else np.savez)(tmp, **arrays)
        _readable(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class InvalidResults(ValueError):
    pass


def load_document(path: Path) -> dict[str, Any]:
    """Read and minimally validate a parity.json; one-line errors for anything foreign."""
    return validate_document(read_json(path), path)


def read_json(path: Path) -> Any:
    """A JSON file's contents; a file that cannot be read or is not JSON (one cut off mid-write
    included) is one line (``InvalidResults``)."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise InvalidResults(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidResults(f"{path} is not valid JSON ({exc})") from exc


def validate_document(document: Any, path: Path) -> dict[str, Any]:
    """``document`` (read from ``path``), checked as ``load_document`` checks it."""
    if not isinstance(document, dict) or document.get("schema") not in READABLE:
        found = document.get("schema") if isinstance(document, dict) else None
        what = f"schema {found!r}" if isinstance(found, str) else "no equiv schema"
        raise InvalidResults(
            f"{path} is not an equiv parity file this equiv reads ({what}; expected one of "
            f"{', '.join(READABLE)})"
        )
    cells = document.get("cells")
    if not isinstance(cells, list) or not all(
        isinstance(c, dict) and {"case", "backend", "dtype", "status"} <= c.keys() for c in cells
    ):
        raise InvalidResults(
            f"{path}: 'cells' must be a list of cells with case/backend/dtype/status"
        )
    return document
