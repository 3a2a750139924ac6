"""What ``equiv diff`` writes: a text summary, diff.json, and diff.html in the report's style.

The page is one self-contained file (the report's CSS inlined, figures as inline SVG drawn by
matplotlib's object API, ``equiv.report.plots``): a matrix of labels, both sides' versions,
and for every pair that changed, both runs' error curves (largest error ÷ tolerance over the
compared quantities, per step, from each side's ``series``).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import jinja2

from equiv.checking.compare import error_ratio
from equiv.drift.labels import (
    DRIFT,
    IDENTICAL,
    LABELS,
    SKIPPED,
    UNCHANGED,
    DiffResult,
    PairDiff,
    describe_drift,
)
from equiv.results.document import json_safe

DIFF_SCHEMA = "equiv.diff/1"
#: labels a reader need not open: the details list holds the others, with their plots
QUIET = (IDENTICAL, UNCHANGED, SKIPPED)
#: drifting pairs listed by name in the text summary (the largest first)
TEXT_DRIFTS = 10


def headline(result: DiffResult) -> str:
    counts = result.counts()
    said = ", ".join(f"{n} {label}" for label, n in counts.items() if n)
    return f"{len(result.pairs)} cells: {said or 'none'}"


def _side_line(side, changed: dict) -> str:
    versions = side.environment.get("versions") or {}
    which = 0 if side.label == "OLD" else 1
    shown = ", ".join(f"{k} {v[which]}" for k, v in changed.items() if v[which] is not None)
    return f"{side.label} {side.path}" + (
        f" ({shown})" if shown else f" ({len(versions)} packages)"
    )


def text_summary(result: DiffResult) -> str:
    changed = result.versions_changed()
    lines = [
        f"equiv diff: {_side_line(result.old, changed)} vs {_side_line(result.new, changed)}",
        headline(result),
        *(f"note: {n}" for n in result.notes),
    ]
    for label in LABELS:
        if label in (*QUIET, DRIFT):
            continue
        lines += [f"{label:<19} {p.id}: {p.why}" for p in result.pairs if p.label == label]
    drifts = sorted(
        (p for p in result.pairs if p.label == DRIFT),
        key=lambda p: -((p.drift or {}).get("tolerance_fraction") or 0.0),
    )
    for p in drifts[:TEXT_DRIFTS]:
        lines.append(f"{DRIFT:<19} {p.id}: {describe_drift(p.drift)}")
    if len(drifts) > TEXT_DRIFTS:
        lines.append(f"{'':<19} ... and {len(drifts) - TEXT_DRIFTS} more drifting cells")
    return "\n".join(lines)


def _side_json(side) -> dict[str, Any]:
    return {
        "path": str(side.path),
        "schema": side.schema,
        "created": side.created,
        "settings": side.settings,
        "environment": {
            k: side.environment.get(k) for k in ("cpu", "cpu_features", "versions", "python")
        },
        "incomplete": side.incomplete,
        "steps_kept": side.steps_dir is not None,
    }


def diff_document(result: DiffResult) -> dict[str, Any]:
    return json_safe(
        {
            "schema": DIFF_SCHEMA,
            "old": _side_json(result.old),
            "new": _side_json(result.new),
            "versions_changed": {
                k: {"old": a, "new": b} for k, (a, b) in result.versions_changed().items()
            },
            "notes": result.notes,
            "summary": {**result.counts(), "total": len(result.pairs)},
            "regressed": result.regressed,
            "cells": [p.to_json() for p in result.pairs],
        }
    )


def error_curve(cell: dict[str, Any] | None) -> tuple[list[int], list[float]] | None:
    """Per plotted step, the largest error ÷ tolerance over the cell's compared quantities."""
    series = (cell or {}).get("series") or {}
    steps = series.get("step")
    if not steps:
        return None
    worst = [0.0] * len(steps)
    for key, values in series.items():
        if key == "step" or not isinstance(values, dict):
            continue
        pairs = zip(values["error"], values["tolerance"], strict=True)
        for i, (err, tol) in enumerate(pairs):
            # "inf" is written as a string
            worst[i] = max(worst[i], error_ratio(float(err), float(tol)))
    return list(steps), worst


def curves_svg(pair: PairDiff) -> str | None:
    from matplotlib.figure import Figure

    from equiv.report.plots import to_svg

    curves = [(name, error_curve(cell)) for name, cell in (("OLD", pair.old), ("NEW", pair.new))]
    if all(c is None for _, c in curves):
        return None
    fig = Figure(figsize=(5.2, 2.0))
    ax = fig.add_subplot()
    for (name, curve), style in zip(curves, ("-", "--"), strict=True):
        if curve is not None:
            ax.plot(curve[0], [max(v, 1e-6) for v in curve[1]], style, lw=1.2, label=name)
    ax.axhline(1.0, color="#b00020", lw=0.8, label="tolerance")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("error ÷ tolerance")
    ax.set_title(pair.id)
    ax.legend(loc="best")
    fig.tight_layout()
    return to_svg(fig, f"diff-{pair.id}")


def render_html(result: DiffResult) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("equiv.drift", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    css = (resources.files("equiv.report") / "static" / "report.css").read_text(encoding="utf-8")
    backends = sorted({p.backend for p in result.pairs if p.backend})
    rows = sorted({(p.case, p.dtype) for p in result.pairs if p.case})
    grid = {(p.case, p.dtype, p.backend): p for p in result.pairs}
    details = [
        {"pair": p, "drift": describe_drift(p.drift) if p.drift else None, "svg": curves_svg(p)}
        for p in result.pairs
        if p.label not in QUIET
    ]
    return env.get_template("diff.html.j2").render(
        css=css,
        result=result,
        headline=headline(result),
        counts=result.counts(),
        versions=result.versions_changed(),
        old=_side_json(result.old),
        new=_side_json(result.new),
        backends=backends,
        rows=rows,
        grid=grid,
        details=details,
        slug=lambda s: "".join(ch if ch.isalnum() else "-" for ch in s),
    )
