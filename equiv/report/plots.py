"""Inline SVG plots for the parity report, drawn with matplotlib's object API.

Why the object API (``matplotlib.figure.Figure``) and not pyplot: no global figure state and no
GUI backend, so rendering is safe inside a pytest session or after a run, and the same input
gives the same SVG (a fixed hash salt). Text stays text (``svg.fonttype: none``), which keeps a
figure to a few tens of kB and lets the page's font show through.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter, LogLocator, MaxNLocator, NullLocator

from equiv.report.model import GROUP_TITLES, as_float, fmt_seconds

STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "equiv",
    "font.family": "sans-serif",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "path.simplify": True,
}
PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
]
DTYPE_COLOURS = {"float64": "#1f5fa8", "float32": "#d9731a"}
FAIL_RED = "#c62828"


def to_svg(fig: Figure, prefix: str) -> str:
    """The figure as an ``<svg>`` element with ids made unique to ``prefix``, so that many
    figures can live in one HTML page without their clip paths colliding."""
    buf = io.StringIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", prefix)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{safe}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{safe}-\1)", text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{safe}-\1"', text)
    # Let CSS size the figure: keep the viewBox, drop the fixed size in points.
    text = re.sub(r'(<svg[^>]*?)\s(?:width|height)="[^"]*"', r"\1", text, count=1)
    text = re.sub(r'(<svg[^>]*?)\s(?:width|height)="[^"]*"', r"\1", text, count=1)
    return text.replace("<svg", '<svg class="plot" role="img"', 1)


def _log_axis(axis, low: float, high: float) -> None:
    """Log scale with plain "1e-05" labels and few ticks: matplotlib's default mathtext labels
    and its many minor ticks cost tenths of a second per figure, which adds up over a matrix
    of cells. Minor ticks (labelled) only where the data span less than two decades."""
    axis.set_major_formatter(LogFormatter())
    if high > 0 and low > 0 and math.log10(high / low) < 2:
        axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 1)))
    else:
        axis.set_major_locator(LogLocator(numticks=6))
        axis.set_minor_locator(NullLocator())


def _positive(values: Sequence[Any]) -> list[float]:
    """Log axes cannot show 0 (an exact match): such points become gaps (NaN)."""
    out = []
    for v in values:
        f = as_float(v)
        out.append(f if f is not None and f > 0 and math.isfinite(f) else math.nan)
    return out


def error_plot(
    series: dict[str, Any], divergence: dict[str, Any] | None, prefix: str
) -> str | None:
    """One panel per quantity group (loss, gradients, parameters): each name's error (solid)
    and tolerance (dashed, same colour) against step on a log scale; points beyond tolerance
    are red crosses and the first divergence a red vertical line."""
    steps = series.get("step") if isinstance(series, dict) else None
    if not isinstance(steps, list) or not steps:
        return None
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for key, value in series.items():
        if key == "step" or not isinstance(value, dict):
            continue
        group, _, name = key.partition("/")
        groups.setdefault(group, []).append((name or group, value))
    order = [g for g in GROUP_TITLES if g in groups] + [g for g in groups if g not in GROUP_TITLES]
    if not order:
        return None
    div_step = as_float(divergence.get("step")) if isinstance(divergence, dict) else None
    legend_rows = max(math.ceil((len(groups[g]) + 2) / 4) for g in order)
    axes_h = 1.3  # inches; below it the tick labels, "step", then the legend rows
    bottom, top = 0.5 + 0.2 * legend_rows, 0.3
    width, height = 3.6 * len(order), axes_h + bottom + top
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height))
        # Fixed margins (inches) instead of tight_layout, which doubles the drawing time.
        fig.subplots_adjust(
            left=0.75 / width,
            right=1 - 0.35 / width,
            top=1 - top / height,
            bottom=bottom / height,
            wspace=0.32,
        )
        axes = fig.subplots(1, len(order), squeeze=False)[0]
        for ax, group in zip(axes, order, strict=True):
            _error_panel(ax, steps, groups[group], div_step, legend_y=-0.42 / axes_h)
            ax.set_title(GROUP_TITLES.get(group, group))
        axes[0].set_ylabel("max |impl - ref64|")
        return to_svg(fig, prefix)


def _error_panel(
    ax,
    steps: list[Any],
    quantities: list[tuple[str, dict[str, Any]]],
    div_step: float | None,
    legend_y: float,
) -> None:
    handles = []
    shown: list[float] = []
    exact = True
    for i, (name, value) in enumerate(quantities):
        colour = PALETTE[i % len(PALETTE)]
        err = _positive(value.get("error") or [])
        tol = _positive(value.get("tolerance") or [])
        n = min(len(steps), len(err))
        if n == 0:
            continue
        xs, err = steps[:n], err[:n]
        tol = (tol + [math.nan] * n)[:n]
        ax.plot(xs, err, color=colour, lw=1.2)
        exact = exact and all(math.isnan(v) for v in err)
        ax.plot(xs, tol, color=colour, lw=1.0, ls="--", alpha=0.8)
        shown += [v for v in err + tol if not math.isnan(v)]
        over = [(x, e) for x, e, t in zip(xs, err, tol, strict=True) if e > t]
        if over:
            ax.plot(*zip(*over, strict=True), ls="none", marker="x", ms=4, color=FAIL_RED)
        if len(quantities) > 1:
            handles.append(Line2D([], [], color=colour, lw=1.5, label=name))
    if div_step is not None:
        ax.axvline(div_step, color=FAIL_RED, lw=1, ls=":")
    ax.set_xlabel("step")
    if shown:
        ax.set_yscale("log")
        _log_axis(ax.yaxis, min(shown), max(shown))
        if exact:
            ax.text(0.03, 0.95, "error exactly 0 at every step", transform=ax.transAxes, va="top")
    else:
        ax.text(
            0.5, 0.5, "exact match at every step", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_yticks([])
    handles += [
        Line2D([], [], color="#333", lw=1.2, label="error"),
        Line2D([], [], color="#333", lw=1.0, ls="--", label="tolerance"),
    ]
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, legend_y),
        ncol=min(len(handles), 4),
    )


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


def branch_plot(branches: dict[str, Any], prefix: str) -> str | None:
    """Two strips, reference above implementation, one colour per branch; black ticks mark the
    numerically ambiguous steps, red ticks the steps where the two took different branches."""
    ref = branches.get("reference") or []
    impl = branches.get("implementation") or []
    if not isinstance(ref, list) or not isinstance(impl, list) or not (ref or impl):
        return None
    names = sorted({str(b) for b in ref + impl if b is not None})
    colours = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    colours["?"] = "#bbbbbb"
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10, 1.25))
        ax = fig.subplots()
        for y, trace in ((1, ref), (0, impl)):
            for start, length, label in runs(trace):
                ax.broken_barh([(start - 0.5, length)], (y - 0.35, 0.7), color=colours[label])
        ambiguous = [s for s in branches.get("ambiguous_steps") or [] if isinstance(s, int)]
        if ambiguous:
            ax.plot(ambiguous, [1.5] * len(ambiguous), ls="none", marker="|", ms=7, color="k")
        differ = [i for i, (a, b) in enumerate(zip(impl, ref, strict=False)) if a != b]
        if differ:
            ax.plot(differ, [-0.5] * len(differ), ls="none", marker="|", ms=7, color=FAIL_RED)
        stopped = branches.get("stopped_at")
        if isinstance(stopped, int):
            ax.axvline(stopped - 0.5, color=FAIL_RED, lw=1, ls="--")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yticks([0, 1], ["implementation", "reference"])
        ax.set_ylim(-0.8, 1.8)
        ax.set_xlim(-0.5, max(len(ref), len(impl)) - 0.5)
        ax.set_xlabel("step")
        ax.grid(False)
        handles = [Line2D([], [], color=colours[n], lw=6, label=n) for n in names]
        if ambiguous:
            handles.append(Line2D([], [], color="k", ls="none", marker="|", label="ambiguous"))
        if differ:
            handles.append(Line2D([], [], color=FAIL_RED, ls="none", marker="|", label="differs"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.tight_layout()
        return to_svg(fig, prefix)


def benchmark_plot(rows: list[dict[str, Any]], prefix: str) -> str | None:
    """Median step time per (backend, dtype) on a log axis: a dot at the median, a whisker from
    the fastest to the slowest round, a hollow diamond at the first call (which includes
    tracing or compilation), and on the right the median, its interquartile range and the
    ratio to the fastest in words. (The JSON has the IQR's width but not its quartiles, so it
    is written rather than drawn at a guessed place.)"""
    rows = [r for r in rows if r.get("median_s")]
    if not rows:
        return None
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(8, 0.36 * len(rows) + 1.1))
        ax = fig.subplots()
        for y, row in enumerate(reversed(rows)):
            colour = DTYPE_COLOURS.get(row["dtype"], "#555555")
            med = row["median_s"]
            lo, hi = row.get("min_s"), row.get("max_s")
            if lo and hi:
                ax.plot([lo, hi], [y, y], color=colour, lw=1.2, alpha=0.55)
                ax.plot([lo, hi], [y, y], ls="none", marker="|", ms=7, color=colour, alpha=0.7)
            ax.plot([med], [y], marker="o", ms=6, color=colour)
            first = row.get("first_call_s")
            if first:
                ax.plot([first], [y], marker="D", ms=4.5, mfc="none", color="#444444")
            words = fmt_seconds(med)
            if row.get("iqr_s"):
                words += f"  (IQR {fmt_seconds(row['iqr_s'])})"
            if row.get("relative"):
                words += f"  {row['relative']:.2f}×"
            ax.annotate(
                words,
                (1.01, y),
                xycoords=("axes fraction", "data"),
                va="center",
                fontsize=7.5,
                color=colour,
            )
        labels = [f"{r['backend']} · {r['dtype']}" for r in reversed(rows)]
        ax.set_yticks(range(len(rows)), labels)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xscale("log")
        values = [v for r in rows for v in (r.get("min_s"), r["median_s"], r.get("first_call_s"))]
        values = [v for v in values if v]
        _log_axis(ax.xaxis, min(values), max(values))
        ax.set_xlabel("seconds per training step (log scale)")
        ax.grid(True, axis="x", which="both", alpha=0.25)
        ax.grid(False, axis="y")
        handles = [
            Line2D([], [], color="#333", marker="o", ls="none", label="median step"),
            Line2D([], [], color="#333", lw=1.2, marker="|", label="fastest–slowest round"),
            Line2D([], [], color="#444", marker="D", mfc="none", ls="none", label="first call"),
        ]
        ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3)
        fig.tight_layout()
        return to_svg(fig, prefix)
