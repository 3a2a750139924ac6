"""Compact per-cell plot data, drawn in the browser by the page's script (uPlot, vendored).

Why not an SVG per cell: matplotlib SVGs of every cell made a full run's page 21 MB that took
9 s to open, for plots that a reader opens a few of. The page now carries each cell's numbers
once, rounded to what a log-scale plot can show, and draws a cell's plots only when its details
are opened and scrolled into view. Branch traces travel as runs (first step, length, branch),
which is what the strip shows. The per-case step-time plots are drawn the same way.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
from collections.abc import Sequence
from typing import Any

from equiv.contract.divergence import as_float
from equiv.report.labels import GROUP_TITLES

#: significant digits of a plotted error or tolerance: a 0.5% step, finer than a pixel of a
#: log axis spanning a few decades, and what the hover read-out shows.
DIGITS = 3


def _value(value: Any) -> float | None:
    """A plottable number: None (a gap) for anything not finite, as JSON's null."""
    f = as_float(value)
    if f is None or not math.isfinite(f):
        return None
    return float(f"{f:.{DIGITS}g}")


def _over(error: Any, tolerance: Any) -> bool:
    """Beyond tolerance, judged on the unrounded numbers (rounding could hide a near miss)."""
    e, t = as_float(error), as_float(tolerance)
    return e is not None and t is not None and e > t


def error_data(series: Any, divergence: Any, resync: Any = None) -> dict[str, Any] | None:
    """The error plot of one cell: ``step``, ``groups`` (one panel per quantity group, each
    with ``[name, errors, tolerances, (indices beyond tolerance)]`` per quantity), ``div``,
    the first divergence's step, and ``resync``, the first resynchronised step (from there
    each point is one step from the reference's state, against a one-step tolerance). None
    when the series holds nothing to plot."""
    if not isinstance(series, dict):
        return None
    steps = series.get("step")
    if not isinstance(steps, list) or not steps:
        return None
    xs = [as_float(s) for s in steps]
    if any(x is None for x in xs):
        return None
    grouped: dict[str, list[list[Any]]] = {}
    for key, value in series.items():
        if key == "step" or not isinstance(value, dict):
            continue
        group, _, name = key.partition("/")
        errors = value.get("error") if isinstance(value.get("error"), list) else []
        tolerances = value.get("tolerance") if isinstance(value.get("tolerance"), list) else []
        pad = [None] * len(xs)
        errors, tolerances = (errors + pad)[: len(xs)], (tolerances + pad)[: len(xs)]
        quantity: list[Any] = [
            name or group,
            [_value(v) for v in errors],
            [_value(v) for v in tolerances],
        ]
        over = [i for i, (e, t) in enumerate(zip(errors, tolerances, strict=True)) if _over(e, t)]
        if over:
            quantity.append(over)
        grouped.setdefault(group, []).append(quantity)
    order = [g for g in GROUP_TITLES if g in grouped] + [
        g for g in grouped if g not in GROUP_TITLES
    ]
    if not order:
        return None
    div = as_float(divergence.get("step")) if isinstance(divergence, dict) else None
    return {
        "step": [int(x) if x is not None and x.is_integer() else x for x in xs],
        "groups": [{"title": GROUP_TITLES.get(g, g), "q": grouped[g]} for g in order],
        "div": div,
        "resync": as_float(resync),
    }


def runs(values: Sequence[Any]) -> list[tuple[int, int, str]]:
    """Run-length encoding of a branch trace: (first step, length, branch)."""
    out: list[tuple[int, int, str]] = []
    for i, v in enumerate(values):
        label = str(v) if v is not None else "?"
        if out and out[-1][2] == label:
            start, length, _ = out[-1]
            out[-1] = (start, length + 1, label)
        else:
            out.append((i, 1, label))
    return out


def branch_data(branches: Any) -> dict[str, Any] | None:
    """The branch strip of one cell: ``names``, the reference's and the implementation's runs
    as ``[first step, length, index into names]``, the ambiguous steps, the steps where the two
    differ, and the step the comparison stopped at."""
    if not isinstance(branches, dict):
        return None
    ref = branches.get("reference") if isinstance(branches.get("reference"), list) else []
    impl = branches.get("implementation")
    impl = impl if isinstance(impl, list) else []
    if not (ref or impl):
        return None
    ref_runs, impl_runs = runs(ref), runs(impl)
    names = sorted({label for _, _, label in ref_runs + impl_runs})
    index = {name: i for i, name in enumerate(names)}
    stopped = branches.get("stopped_at")
    ambiguous = branches.get("ambiguous_steps")
    return {
        "n": max(len(ref), len(impl)),
        "names": names,
        "ref": [[s, n, index[label]] for s, n, label in ref_runs],
        "impl": [[s, n, index[label]] for s, n, label in impl_runs],
        "ambiguous": [s for s in ambiguous if isinstance(s, int)]
        if isinstance(ambiguous, list)
        else [],
        "differ": [i for i, (a, b) in enumerate(zip(impl, ref, strict=False)) if a != b],
        "stopped": stopped if isinstance(stopped, int) and not isinstance(stopped, bool) else None,
    }


def bench_data(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The step-time plot of one case, a row per timed (backend, dtype) in the speed table's
    order: ``label``, ``dtype``, and the ``median``, ``min``, ``max`` and ``first`` call's
    seconds. None when no row has a median (a run with ``--bench-rounds 0``)."""
    rows = [r for r in rows if r.get("median_s")]
    if not rows:
        return None
    return {
        "label": [f"{r.get('backend')} · {r.get('dtype')}" for r in rows],
        "dtype": [str(r.get("dtype")) for r in rows],
        **{
            key: [_value(r.get(field)) for r in rows]
            for key, field in (
                ("median", "median_s"),
                ("min", "min_s"),
                ("max", "max_s"),
                ("first", "first_call_s"),
            )
        },
    }


def pack(data: dict[str, Any]) -> str:
    """``data`` as gzip-compressed JSON in base64, for ``<script type="application/gzip">``.

    Why compressed: a full run's numbers are about 1.9 MB as text and 0.35 MB packed (they repeat
    digits and keys); the browser unpacks them with its own ``DecompressionStream``, so the page
    stays one offline file. Level 6: level 9 is 3% smaller and 7 times slower. ``mtime=0``: the
    same document gives the same page."""
    raw = json.dumps(data, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")


def unpack(text: str) -> dict[str, Any]:
    """The inverse of ``pack`` (for tests and for reading a page's data back)."""
    return json.loads(gzip.decompress(base64.b64decode(text)))
