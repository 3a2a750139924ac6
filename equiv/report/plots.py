"""Inline SVG figures drawn with matplotlib's object API, for the sweep's margin histogram.
(The parity report's plots are drawn in the browser from compact data: ``plotdata``.)

Why the object API (``matplotlib.figure.Figure``) and not pyplot: no global figure state and no
GUI backend, so rendering is safe inside a pytest session or after a run, and the same input
gives the same SVG (a fixed hash salt). Text stays text (``svg.fonttype: none``), which keeps a
figure to a few tens of kB and lets the page's font show through.
"""

from __future__ import annotations

import io
import re

import matplotlib
from matplotlib.figure import Figure

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
