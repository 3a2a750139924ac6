"""One side of a diff: a run folder, a parity.json, or a stored baseline, read and checked.

Everything is checked before anything is compared: a missing folder, a file that is not JSON,
a document cut off mid-write or of a schema this equiv does not read is one line
(``InvalidResults``). A run that was cut off mid-way is a valid side: its document says so
(``incomplete``), and the diff compares the cells it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from equiv.results.document import InvalidResults, cell_file, read_json, validate_document

#: a stored baseline's schema (``equiv.drift.baseline``)
BASELINE = "equiv.baseline/1"


@dataclass
class Side:
    """A run as the diff sees it: its settings, what it ran on, and its cells by id."""

    label: str
    path: Path
    schema: str
    settings: dict[str, Any]
    environment: dict[str, Any]
    cells: dict[str, dict[str, Any]]
    #: the run's DIR/steps, where it has one (per step records: digests, errors)
    steps_dir: Path | None = None
    #: a cut-off run's ``incomplete`` entry (docs/parity-json.md); None: complete
    incomplete: dict[str, Any] | None = None
    created: str | None = None
    _records: dict[str, dict[str, np.ndarray] | None] = field(default_factory=dict)

    @property
    def digest_algorithm(self) -> str:
        """How its digests were made: recorded since XXH3 replaced SHA-1 (a run without the
        setting took SHA-1's first 8 bytes)."""
        return self.settings.get("digest") or "sha1-64"

    @property
    def family(self) -> str:
        """The schema's data version: a baseline is made from a parity/2 document."""
        return "equiv.parity/2" if self.schema == BASELINE else self.schema

    def step_records(self, cell: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """The cell's DIR/steps file, or None where the run kept none (a baseline)."""
        if self.steps_dir is None:
            return None
        name = cell_file(cell["case"], cell["backend"], cell["dtype"])
        if name not in self._records:
            path = self.steps_dir / name
            try:
                with np.load(path, allow_pickle=False) as z:
                    self._records[name] = {k: z[k] for k in z.files}
            except (OSError, ValueError, EOFError):
                self._records[name] = None  # absent or damaged: the cell's JSON still counts
        return self._records[name]


def document_path(path: Path, label: str) -> Path:
    """The file a run is read from: a run folder's parity.json, or the file given."""
    if path.is_dir():
        target = path / "parity.json"
        if not target.exists():
            raise InvalidResults(f"{label} {path}: no parity.json in this folder")
        return target
    if not path.exists():
        raise InvalidResults(f"{label} {path}: no such file or folder")
    return path


def load_side(path: str | Path, label: str) -> Side:
    """``path``: a run folder (its parity.json), a parity.json, or a baseline file."""
    path = Path(path)
    target = document_path(path, label)
    try:
        document = read_json(target)  # read once: a full run's document is megabytes
        baseline = isinstance(document, dict) and document.get("schema") == BASELINE
        if not baseline:
            document = validate_document(document, target)
    except InvalidResults as exc:
        raise InvalidResults(f"{label} {exc}") from None
    if baseline:
        return _baseline_side(document, target, label)
    steps = target.parent / "steps"
    return Side(
        label=label,
        path=path,
        schema=document["schema"],
        settings=dict(document.get("run") or {}),
        environment=dict(document.get("environment") or {}),
        cells={_cell_id(c): c for c in document["cells"]},
        steps_dir=steps if steps.is_dir() else None,
        incomplete=document.get("incomplete"),
        created=document.get("created"),
    )


def _cell_id(cell: dict[str, Any]) -> str:
    return cell.get("id") or f"{cell['case']}-{cell['backend']}-{cell['dtype']}"


def _baseline_side(document: dict[str, Any], path: Path, label: str) -> Side:
    cells = document.get("cells")
    if not isinstance(cells, dict) or not all(
        isinstance(c, dict) and {"case", "backend", "dtype", "status"} <= c.keys()
        for c in cells.values()
    ):
        raise InvalidResults(
            f"{label} {path}: a baseline's 'cells' must map ids to cells with "
            "case/backend/dtype/status"
        )
    return Side(
        label=label,
        path=path,
        schema=BASELINE,
        settings=dict(document.get("settings") or {}),
        environment=dict(document.get("environment") or {}),
        cells={k: {"id": k, **v} for k, v in cells.items()},
        created=document.get("created"),
    )


def check_compatible(old: Side, new: Side) -> None:
    """Two sides of different schema versions cannot be paired field by field."""
    if old.family != new.family:
        raise InvalidResults(
            f"OLD {old.path} is {old.schema} and NEW {new.path} is {new.schema}: incompatible "
            "schema versions (run both with the same equiv)"
        )
