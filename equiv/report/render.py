"""parity.html: one self-contained page rendered from a parity document alone.

The page reads only the JSON (never a framework, never the network): CSS, scripts (uPlot,
vendored in ``static/``) and the plot data are inlined, so the file can be mailed, archived as
a CI artifact or opened from disk. Plots are drawn by the browser when they come into view (a
cell's when its details are opened; ``plotdata``): a full run's page is about 1 MB and opens in
a second. It is rendered into memory first and moved into place atomically, so an
interrupted run leaves the previous page or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from equiv.contract.records import COMPARE, DTYPES, REFERENCE, STATUSES, harness_split
from equiv.report import model, plotdata
from equiv.results.document import atomic_write_bytes


def _static(name: str) -> str:
    return (resources.files("equiv.report") / "static" / name).read_text(encoding="utf-8")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("equiv.report", "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = model.fmt_seconds
    env.filters["number"] = model.fmt_number
    env.filters["ratio"] = model.fmt_ratio
    env.filters["pretty"] = lambda v: json.dumps(v, indent=1, sort_keys=True, default=str)
    return env


class _Links:
    """Where each cell's trajectory file lies, as a link relative to the page (or None)."""

    def __init__(self, out_dir: Path | None, json_dir: Path | None):
        self.out_dir, self.json_dir = out_dir, json_dir

    def __call__(self, cell: dict[str, Any]) -> str | None:
        if self.out_dir is None:
            return None
        folders = []
        if isinstance(cell.get("source"), str):
            folders.append(Path(cell["source"]).parent)
        if self.json_dir is not None:
            folders.append(self.json_dir)
        for folder in folders:
            path = folder / "trajectories" / model.trajectory_name(cell)
            if path.is_file():
                return Path(os.path.relpath(path.resolve(), self.out_dir.resolve())).as_posix()
        return None


def _matrices(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cases (rows) by backends (columns), one table per dtype, with ok-counts per row/column."""
    out = []
    for dtype in model.ordered([v["dtype"] for v in views], DTYPES):
        mine = [v for v in views if v["dtype"] == dtype]
        backends = model.ordered([v["backend"] for v in mine], ("numpy",))
        cases = model.ordered([v["case"] for v in mine], ())
        index = {(v["case"], v["backend"]): v for v in mine}
        rows = []
        for case in cases:
            cells = [index.get((case, b)) for b in backends]
            present = [c for c in cells if c]
            ok = sum(c["status"] in model.OK_STATUSES for c in present)
            ran = sum(c["status"] != "skip" for c in present)
            rows.append({"case": case, "cells": cells, "ok": ok, "ran": ran})
        columns = []
        for b in backends:
            present = [index[(c, b)] for c in cases if (c, b) in index]
            columns.append(
                {
                    "ok": sum(c["status"] in model.OK_STATUSES for c in present),
                    "ran": sum(c["status"] != "skip" for c in present),
                }
            )
        out.append({"dtype": dtype, "backends": backends, "rows": rows, "columns": columns})
    return out


BENCH_FIELDS = ("median_s", "iqr_s", "stddev_s", "min_s", "max_s", "first_call_s", "gflops")


def _benchmarks(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case: each timed (backend, dtype) relative to the fastest backend of that dtype."""
    out = []
    for case in model.ordered([v["case"] for v in views], ()):
        rows, untimed = [], []
        for v in views:
            if v["case"] != case:
                continue
            bench = v["benchmark"] or {}
            row = {k: model.as_float(bench.get(k)) for k in BENCH_FIELDS}
            if not row["median_s"] and not row["first_call_s"]:
                untimed.append(v)
                continue
            row.update(
                backend=v["backend"],
                dtype=v["dtype"],
                status=v["status"],
                anchor=v["anchor"],
                rounds=bench.get("rounds"),
                flops=model.as_float(bench.get("flops_per_step")),
            )
            rows.append(row)
        dtypes = model.ordered([r["dtype"] for r in rows], DTYPES)
        rows.sort(key=lambda r: (dtypes.index(r["dtype"]), r["median_s"] or float("inf")))
        for dtype in dtypes:
            medians = [r["median_s"] for r in rows if r["dtype"] == dtype and r["median_s"]]
            fastest = min(medians) if medians else None
            for r in rows:
                if r["dtype"] == dtype and fastest and r["median_s"]:
                    r["relative"] = r["median_s"] / fastest
        out.append(
            {
                "case": case,
                "anchor": f"speed-{case}",
                "rows": rows,
                "untimed": untimed,
                "plot": plotdata.bench_data(rows),
            }
        )
    return out


def _harness_costs(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backend, and for the run (last row): the seconds its cells spent in the port's own
    work and in the harness's (``harness_split`` of their ``phases_s``), and of the harness's
    the float64 reference's own steps (None for a document recorded before they were timed
    apart). Empty for a document recorded before the lockstep was split (no cell has a
    ``compare`` phase)."""
    cells: Counter[str] = Counter()
    port: Counter[str] = Counter()
    harness: Counter[str] = Counter()
    reference: Counter[str] = Counter()
    timed_apart = False
    split = False
    for v in views:
        phases = v["raw"].get("phases_s")
        phases = {
            k: float(x)
            for k, x in (phases.items() if isinstance(phases, dict) else ())
            if isinstance(x, (int, float))
        }
        if not phases:
            continue
        split = split or COMPARE in phases
        timed_apart = timed_apart or REFERENCE in phases
        name = v["backend"]
        own, equivs = harness_split(phases)
        cells[name] += 1
        port[name] += own
        harness[name] += equivs
        reference[name] += phases.get(REFERENCE, 0.0)
    if not split:
        return []
    names = model.ordered(list(cells), ("numpy",))
    rows = [(name, cells[name], port[name], harness[name], reference[name]) for name in names]
    rows.append(("run", cells.total(), port.total(), harness.total(), reference.total()))
    return [
        {
            "backend": name,
            "cells": n,
            "port_s": p,
            "harness_s": h,
            "reference_s": r if timed_apart else None,
            "share": h / (p + h) if p + h > 0 else None,
        }
        for name, n, p, h, r in rows
    ]


def _headline(summary: dict[str, int]) -> str:
    total = summary.get("total", 0)
    bad = {s: summary.get(s, 0) for s in ("fail", "error", "timeout") if summary.get(s)}
    ran = total - summary.get("skip", 0)
    if total == 0:
        return "This run holds no cells."
    if not bad:
        text = f"All {ran} cells that ran agree with the float64 reference"
        if summary.get("explained"):
            text += f" ({summary['explained']} through an explained difference)"
        text += "."
    else:
        parts = ", ".join(f"{n} {s}" for s, n in bad.items())
        text = f"{sum(bad.values())} of {ran} cells that ran do not agree: {parts}."
    if summary.get("skip"):
        text += f" {summary['skip']} skipped."
    if summary.get("conflict"):
        text += f" {summary['conflict']} cells have conflicting results from different inputs."
    return text


def _plot_data(
    views: list[dict[str, Any]], benchmarks: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Every result's plot data (conflicting results too) and every case's step-time plot,
    keyed by the anchor of the section that shows it."""
    out: dict[str, dict[str, Any]] = {
        b["anchor"]: {"bench": b["plot"]} for b in benchmarks if b["plot"]
    }
    for view in views:
        for v in [view, *view["conflicts"]]:
            entry = {"errors": v["plot"], "branches": (v["branches"] or {}).get("plot")}
            entry = {k: d for k, d in entry.items() if d}
            if entry:
                out[v["anchor"]] = entry
    return out


def build_context(
    document: dict[str, Any], out_dir: Path | None = None, json_dir: Path | None = None
) -> dict[str, Any]:
    links = _Links(out_dir, json_dir)
    parsed = model.document_view(document)
    views = [model.cell_view(c, links) for c in parsed["cells"]]
    counts = {s: sum(v["status"] == s for v in views) for s in STATUSES}
    counts["unknown"] = sum(v["status"] == "unknown" for v in views)
    summary = {**counts, "total": len(views), "conflict": sum(bool(v["conflicts"]) for v in views)}
    # a pass with a caveat (a compiled mode that may have run eagerly) is not a plain pass
    problems = [v for v in views if v["status"] not in ("pass",) or v["conflicts"] or v["caveats"]]
    problems.sort(key=lambda v: (model.severity(v["status"]), v["case"], v["backend"]))
    by_case: dict[str, list[dict[str, Any]]] = {}
    for case in model.ordered([v["case"] for v in views], ()):
        group = [v for v in views if v["case"] == case]
        dtypes = model.ordered([v["dtype"] for v in group], DTYPES)
        backends = model.ordered([v["backend"] for v in group], ("numpy",))
        group.sort(key=lambda v: (dtypes.index(v["dtype"]), backends.index(v["backend"])))
        by_case[case] = group
    benchmarks = _benchmarks(views)
    return {
        "document": document,
        **{k: v for k, v in parsed.items() if k != "cells"},
        "summary": summary,
        "headline": _headline(summary),
        "statuses": [s for s in STATUSES if counts[s]] + (["unknown"] if counts["unknown"] else []),
        "all_statuses": STATUSES,
        "status_help": model.STATUS_HELP,
        "matrices": _matrices(views),
        "problems": problems,
        "caveated": [v for v in views if v["caveats"]],
        "resynced": [v for v in views if v["resynchronised_from"] is not None],
        "benchmarks": benchmarks,
        "harness_costs": _harness_costs(views),
        "by_case": by_case,
        "plot_data": plotdata.pack(_plot_data(views, benchmarks)),
        "css": _static("uPlot.min.css") + "\n" + _static("report.css"),
        "js": _static("report.js"),
        "plots_js": _static("plots.js"),
        "uplot_js": _static("uPlot.iife.min.js"),
        "uplot_license": _static("uPlot.LICENSE.txt"),
    }


def render_html(
    document: dict[str, Any], out_dir: Path | None = None, json_dir: Path | None = None
) -> str:
    """The page as a string. ``out_dir`` is where it will lie (for relative links to the
    trajectories, which are looked for beside the JSON in ``json_dir``)."""
    context = build_context(document, out_dir=out_dir, json_dir=json_dir)
    return _environment().get_template("parity.html.j2").render(**context)


def write_html(path: Path, html: str) -> None:
    atomic_write_bytes(path, html.encode("utf-8"))


def write_report(out_dir: Path, document: dict[str, Any], json_dir: Path | None = None) -> Path:
    """Render ``document`` and move it into ``out_dir/parity.html`` in one step."""
    out_dir = Path(out_dir)
    html = render_html(document, out_dir=out_dir, json_dir=json_dir or out_dir)
    target = out_dir / "parity.html"
    write_html(target, html)
    return target
