"""The false-alarm sweep: the whole matrix over many seeds, recording each cell's margin.

A correct implementation must never fail. For every (seed, cell) the margin is the largest
error as a fraction of its tolerance (max over loss, gradients, parameters); the sweep reports
their distribution per backend and dtype and every non-passing cell. docs/tolerances.md shows
the published numbers and the command that reproduces them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from equiv.contract.records import CellResult
from equiv.running.matrix import run_cells, select_cells
from equiv.running.runner import RunOptions

QUANTILES = (0.5, 0.9, 0.99, 1.0)
#: the verdicts a correct implementation may get; anything else in a sweep is a false alarm
ACCEPTED = ("pass", "explained", "skip")


def margin(result: CellResult) -> float:
    """Of the check that decided the verdict: for an ``explained`` cell, its proven variant."""
    ratios = result.max_ratio
    if result.status == "explained":
        ratios = result.explanation.variant_max_ratio
    return max(ratios.values(), default=0.0)


def run_sweep(
    seeds: Sequence[int],
    cases: Sequence[str] = (),
    backends: Sequence[str] = (),
    dtypes: Sequence[str] = (),
    steps: int | None = None,
    emit: Callable[[str], None] = print,
    threads: int = 1,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    calibration_dir: str | None = None,
    isolate: str = "backend",
    resync: bool = True,
    reference: str | None = None,
    executor: str = "local",
) -> dict[str, Any]:
    """``checkpoint`` gets the report so far after every seed: a long sweep that is stopped
    keeps what it measured. ``calibration_dir``: a calibration store shared with the cells'
    worker processes and with other sweeps (split by backend) of the same seeds; without one
    every process computes each calibration itself. ``isolate="backend"`` runs each seed's
    cells in fresh worker processes, one per backend: a crash stays in its worker, and the
    frameworks' caches (traced functions, compiled executables) go with it after every seed;
    run in one process, a resnet18 sweep grew to 6 GB by its seventh seed and was killed for
    memory. ``"none"``: every cell in this process (no imports per seed; small cases).
    ``resync``: ``RunOptions.resync``, as in ``equiv run`` (on by default there too).
    ``executor="ray"``: each cell a task on the Ray cluster already joined
    (``equiv.running.ray_executor``)."""
    cells = select_cells(cases, backends, dtypes)
    rows: list[dict[str, Any]] = []
    done: list[int] = []
    for seed in seeds:
        # no reproducibility re-run: a fresh build and its first steps again (another trace
        # or XLA compile), 15-25% of a resnet18 cell, never part of a verdict
        options = RunOptions.verdict_only(
            seed=seed,
            steps=steps,
            threads=threads,
            calibration_dir=calibration_dir,
            resync=resync,
            reference=reference,
        )
        results = run_cells(cells, options, isolate=isolate, executor=executor)
        bad = [r for r in results if r.status not in ACCEPTED]
        emit(f"seed {seed}: {len(results)} cells, {len(bad)} not passing")
        for r in bad:
            emit(f"  {r.cell.id}: {r.status}: {r.reason}")
        rows += [
            {
                "seed": seed,
                "case": r.cell.case,
                "backend": r.cell.backend,
                "dtype": r.cell.dtype,
                "status": r.status,
                "margin": margin(r),
                "max_ratio": r.max_ratio,
                "reason": r.reason,
                "ambiguous_stop": (r.branches or {}).get("stopped_at"),
                "followed": len((r.branches or {}).get("followed", [])),
                "coverage": r.coverage,
                "resynchronised_from": r.resynchronised_from,
                "duration_s": round(r.duration_s, 1),
                "retries": r.retries,
            }
            for r in results
        ]
        done.append(seed)
        if checkpoint is not None:
            checkpoint(_report(done, steps, threads, rows, complete=len(done) == len(seeds)))
    return _report(done, steps, threads, rows, complete=True)


def _report(seeds, steps, threads, rows, complete: bool) -> dict[str, Any]:
    return {
        "seeds": list(seeds),
        "complete": complete,
        "steps": steps,
        "threads": threads,
        "rows": list(rows),
        "summary": summarize(rows),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, list[float]] = {}
    for row in rows:
        if row["status"] == "skip":
            continue
        groups.setdefault(f"{row['backend']} {row['dtype']}", []).append(row["margin"])
    table = {}
    for key, values in sorted(groups.items()):
        arr = np.asarray(values)
        table[key] = {"cells": len(values)} | {
            f"q{int(q * 100)}": float(np.quantile(arr, q)) if len(arr) else math.nan
            for q in QUANTILES
        }
    false_alarms = [r for r in rows if r["status"] not in ACCEPTED]
    # issue 15: every cell should compare all its steps; rows of older sweeps lack coverage
    partial = [
        f"seed {r['seed']} {r['case']} {r['backend']} {r['dtype']}"
        for r in rows
        if isinstance(r.get("coverage"), (int, float)) and r["coverage"] < 1
    ]
    return {
        "false_alarms": len(false_alarms),
        "by_backend_dtype": table,
        "followed_steps": sum(int(r.get("followed") or 0) for r in rows),
        "not_fully_compared": partial,
    }


def markdown_table(summary: dict[str, Any]) -> str:
    lines = [
        "| backend, dtype | cells | median | 90% | 99% | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, row in summary["by_backend_dtype"].items():
        lines.append(
            f"| {key} | {row['cells']} | {row['q50']:.3f} | {row['q90']:.3f} | "
            f"{row['q99']:.3f} | {row['q100']:.3f} |"
        )
    return "\n".join(lines)


def merge_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report from sweeps run separately (other backends, other seeds, or a re-run of some
    cells): rows are keyed by (seed, case, backend, dtype), and a later report's row replaces
    an earlier one's; the report lists the replaced cells (``replaced``), so that a re-run
    never hides silently what it replaced."""
    rows: dict[tuple, dict[str, Any]] = {}
    replaced: list[dict[str, Any]] = []
    for report in reports:
        for row in report["rows"]:
            key = (row["seed"], row["case"], row["backend"], row["dtype"])
            if key in rows:
                old = rows[key]
                replaced.append(
                    {
                        **dict(zip(("seed", "case", "backend", "dtype"), key, strict=True)),
                        "was": old["status"],
                        "now": row["status"],
                    }
                )
            rows[key] = row
    merged = sorted(rows.values(), key=lambda r: (r["seed"], r["backend"], r["case"], r["dtype"]))
    out = _report(
        sorted({r["seed"] for r in merged}),
        None,
        max((r.get("threads", 1) for r in reports), default=1),
        merged,
        complete=all(r.get("complete", True) for r in reports),
    )
    out["replaced"] = replaced
    return out


def log_margins(values: Sequence[float]) -> np.ndarray:
    """log10 of the margins for the histogram: exact agreement (0) lands in the leftmost bin
    and a margin of 10 or more (a false alarm far out) in the rightmost, so no cell falls off
    the axis."""
    return np.clip([math.log10(max(v, 1e-4)) for v in values], -4.0, 0.99)


def margin_plot(summary_rows: Sequence[dict[str, Any]]) -> str:
    """The margins of every cell that ran, one histogram per dtype, on a log axis: how far the
    correct implementations stay below their tolerance (1 = at the tolerance)."""
    from matplotlib.figure import Figure

    from equiv.report.plots import to_svg

    dtypes = sorted({r["dtype"] for r in summary_rows if r["status"] != "skip"})
    fig = Figure(figsize=(3.4 * max(len(dtypes), 1), 2.4))
    for i, dtype in enumerate(dtypes):
        ax = fig.add_subplot(1, len(dtypes), i + 1)
        values = [
            r["margin"] for r in summary_rows if r["dtype"] == dtype and r["status"] != "skip"
        ]
        ax.hist(log_margins(values), bins=np.linspace(-4, 1, 41), color="#1f77b4")
        ax.axvline(0.0, color="#d62728", linewidth=1)
        ax.set_title(f"{dtype}: {len(values)} cells, max {max(values, default=0):.2f}")
        ax.set_xlabel("log10(largest error / tolerance); edges: <= -4, >= 1")
        ax.set_ylabel("cells")
    fig.tight_layout()
    return to_svg(fig, "sweep")
