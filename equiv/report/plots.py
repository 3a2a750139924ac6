"""Inline SVG plots drawn with matplotlib's object API: the report's per-case benchmark plot
and the sweep's histogram. (A cell's own plots are drawn in the browser: ``plotdata``.)

Why the object API (``matplotlib.figure.Figure``) and not pyplot: no global figure state and no
GUI backend, so rendering is safe inside a pytest session or after a run, and the same input
gives the same SVG (a fixed hash salt). Text stays text (``svg.fonttype: none``), which keeps a
figure to a few tens of kB and lets the page's font show through.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter, LogLocator, NullLocator

from equiv.report.model import fmt_seconds

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
DTYPE_COLOURS = {"float64": "#1f5fa8", "float32": "#d9731a"}


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
