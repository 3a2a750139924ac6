"""Reading a parity document for display: statuses, numbers, and human wording.

Everything here takes the JSON as it is (possibly from another version of equiv, or merged
from several machines) and never trusts a field's type: a report that renders what it can
beats one that stops at the first odd value.
"""

from __future__ import annotations

import math
from typing import Any

from equiv.divergence import as_float, fmt_ratio  # noqa: F401 - the report's number helpers
from equiv.records import STATUSES

GROUP_TITLES = {"loss": "loss", "grads": "gradients", "params": "parameters"}
#: which status stands first when several results of one cell disagree (a merge's conflict):
#: the worst, so that a merged summary never hides a failure.
SEVERITY = ("error", "timeout", "fail", "explained", "pass", "skip")
OK_STATUSES = ("pass", "explained")
STATUS_HELP = {
    "pass": "within tolerance of the float64 reference at every compared step",
    "fail": "beyond tolerance at some step: see its first divergence",
    "error": "raised, produced NaN/Inf or wrong shapes, or its worker process died",
    "timeout": "no result within the time limit; the worker was killed",
    "skip": "not run here (framework missing, no implementation): see the reason",
    "explained": "a declared, documented semantic difference, measured to match its declaration",
}
#: fields of a cell that the report shows in their own place; any other field is listed raw
KNOWN_CELL_FIELDS = {
    "case",
    "backend",
    "dtype",
    "id",
    "status",
    "reason",
    "steps",
    "compared_steps",
    "max_error",
    "max_ratio",
    "first_divergence",
    "branches",
    "traces",
    "warnings",
    "series",
    "benchmark",
    "traceback",
    "duration_s",
    "phases_s",
    "peak_rss_mb",
    "source",
    "sources",
    "conflicts",
    "superseded",
    "localization",
    "explanation",
    "reproducible",
}


def status_of(cell: dict[str, Any]) -> str:
    status = cell.get("status")
    return status if status in STATUSES else "unknown"


def severity(status: str) -> int:
    return SEVERITY.index(status) if status in SEVERITY else -1


def largest_ratio(cell: dict[str, Any]) -> float | None:
    """The cell's largest error as a fraction of its tolerance, over loss, grads and params."""
    ratios = cell.get("max_ratio")
    if not isinstance(ratios, dict):
        return None
    values = [v for v in (as_float(x) for x in ratios.values()) if v is not None]
    values = [v for v in values if not math.isnan(v)]
    return max(values) if values else None


def fmt_number(value: Any) -> str:
    f = as_float(value)
    if f is None:
        return "" if value is None else str(value)
    if math.isinf(f) or math.isnan(f):
        return str(f)
    if f == 0:
        return "0"
    if f.is_integer() and abs(f) < 1e6:
        return str(int(f))
    return f"{f:.3g}"


def fmt_seconds(value: Any) -> str:
    f = as_float(value)
    if f is None or math.isnan(f):
        return ""
    if f >= 1:
        return f"{f:.2f} s"
    if f >= 1e-3:
        return f"{f * 1e3:.3g} ms"
    return f"{f * 1e6:.3g} µs"


def quantity_label(div: dict[str, Any]) -> str:
    """``grads/w1`` style: the quantity group and the parameter name."""
    quantity = str(div.get("quantity", ""))
    name = div.get("name")
    return f"{quantity}/{name}" if name and quantity in GROUP_TITLES else str(name or quantity)


def trajectory_name(cell: dict[str, Any]) -> str:
    """The file that ``equiv.results.write_trajectories`` writes for this cell."""
    return f"{cell.get('case')}__{cell.get('backend')}__{cell.get('dtype')}.npz"


def runs_text(values: list[Any], limit: int = 12) -> str:
    """A branch trace as runs: ``w2b 0–192, w2a 193–195, ...``."""
    parts: list[str] = []
    start = 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            span = f"{start}" if i - 1 == start else f"{start}–{i - 1}"
            parts.append(f"{values[start]} {span}")
            start = i
    if len(parts) > limit:
        return ", ".join(parts[:limit]) + f", … ({len(parts) - limit} more runs)"
    return ", ".join(parts)
