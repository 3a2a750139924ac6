"""Reading a parity document for display: statuses, numbers, and human wording.

Everything here takes the JSON as it is (possibly from another version of equiv, or merged
from several machines) and never trusts a field's type: a report that renders what it can
beats one that stops at the first odd value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from equiv.contract.divergence import as_float, fmt_ratio, sentence
from equiv.contract.records import NO_TRACE, STATUSES
from equiv.report import plotdata
from equiv.report.labels import CAVEAT_LABELS, GROUP_TITLES
from equiv.results.document import cell_file

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
    "coverage",
    "max_error",
    "max_ratio",
    "first_divergence",
    "branches",
    "traces",
    "warnings",
    "caveats",
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
    "diagnosis",
    "explanation",
    "reproducible",
    "not_observed",
    "layers",
    "state",
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
    """The file that ``equiv.results.document.write_trajectory`` writes for this cell."""
    return cell_file(cell.get("case"), cell.get("backend"), cell.get("dtype"))


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


def ordered(values: list[str], first: tuple[str, ...]) -> list[str]:
    seen = list(dict.fromkeys(values))
    return [v for v in first if v in seen] + sorted(v for v in seen if v not in first)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def document_view(document: dict[str, Any]) -> dict[str, Any]:
    """The document's own fields, each checked once: the cells that are objects, and the
    environment, settings, policy, merge sources and cut-off marker as mappings."""
    incomplete = document.get("incomplete")
    return {
        "schema": document.get("schema"),
        "created": document.get("created"),
        "environment": _mapping(document.get("environment")),
        "run": _mapping(document.get("run")),
        "policy": _mapping(document.get("tolerance_policy")),
        "sources": [s for s in _list(document.get("sources")) if isinstance(s, dict)],
        "incomplete": incomplete if isinstance(incomplete, dict) else None,
        "coverage": _mapping(document.get("coverage")),
        "cells": [c for c in _list(document.get("cells")) if isinstance(c, dict)],
    }


def cell_view(
    cell: dict[str, Any], links: Callable[[dict[str, Any]], str | None], anchor: str | None = None
) -> dict[str, Any]:
    """A cell of the JSON, parsed once into what the templates show: every field checked here,
    so that rendering needs no guards. ``links`` gives a cell's trajectory link; ``anchor``
    names a conflicting result's section (and keys its plot data, unique in the page)."""
    status = status_of(cell)
    cid = str(cell.get("id") or f"{cell.get('case')}-{cell.get('backend')}-{cell.get('dtype')}")
    explanation = _explanation(cell.get("explanation"))
    reference_ratio = largest_ratio(cell)
    # an explained cell is judged against its proven variant: the plain reference's error is
    # the size of the declared difference, not of the port's (it stays in the details)
    against_variant = (
        status == "explained"
        and explanation is not None
        and explanation["variant_ratio"] is not None
    )
    ratio = explanation["variant_ratio"] if against_variant else reference_ratio
    caveats = _caveats(cell.get("caveats")) if "caveats" in cell else _legacy_caveats(cell)
    caveat_messages = {c["message"] for c in caveats}
    max_error = cell.get("max_error") if isinstance(cell.get("max_error"), dict) else {}
    max_ratio = cell.get("max_ratio") if isinstance(cell.get("max_ratio"), dict) else {}
    groups = [
        {
            "title": GROUP_TITLES.get(g, g),
            "error": fmt_number(max_error.get(g)),
            "ratio": fmt_ratio(as_float(max_ratio.get(g))),
            "over": (as_float(max_ratio.get(g)) or 0) > 1,
        }
        for g in ordered(list(max_error) + list(max_ratio), tuple(GROUP_TITLES))
    ]
    not_observed = _mapping(cell.get("not_observed"))
    unseen = [
        {"title": GROUP_TITLES.get(g, g), "reason": str(why)}
        for g, why in not_observed.items()
        if g not in max_error and g not in max_ratio
    ]
    div = cell.get("first_divergence") if isinstance(cell.get("first_divergence"), dict) else None
    branches = cell.get("branches") if isinstance(cell.get("branches"), dict) else None
    anchor = anchor or "cell-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in cid)
    view: dict[str, Any] = {
        "raw": cell,
        "id": cid,
        "anchor": anchor,
        "case": str(cell.get("case")),
        "backend": str(cell.get("backend")),
        "dtype": str(cell.get("dtype")),
        "status": status,
        "raw_status": str(cell.get("status")),
        "reason": cell.get("reason") or "",
        "ratio": ratio,
        "ratio_text": fmt_ratio(ratio),
        "ratio_against": "variant" if against_variant else "reference",
        "reference_ratio_text": fmt_ratio(reference_ratio),
        "groups": groups,
        "not_observed": unseen,
        "divergence": div,
        "divergence_text": sentence(div),
        "where": f"step {div.get('step')} · {quantity_label(div)}" if div else "",
        "caveats": caveats,
        # a caveat's message is shown with its mark, not a second time among the warnings
        "warnings": [
            str(w) for w in _list(cell.get("warnings")) if w and str(w) not in caveat_messages
        ],
        "traceback": cell.get("traceback") if isinstance(cell.get("traceback"), str) else None,
        "traces": cell.get("traces"),
        "steps": cell.get("steps"),
        "compared_steps": cell.get("compared_steps"),
        "coverage": as_float(cell.get("coverage")),
        "resynchronised_from": _step(cell.get("resynchronised_from")),
        "duration_s": cell.get("duration_s"),
        "benchmark": cell.get("benchmark") if isinstance(cell.get("benchmark"), dict) else None,
        "source": cell.get("source"),
        "sources": [str(s) for s in _list(cell.get("sources"))],
        "superseded": [s for s in _list(cell.get("superseded")) if isinstance(s, dict)],
        "trajectory": trajectory_name(cell),
        "trajectory_href": links(cell),
        "extra": {k: v for k, v in cell.items() if k not in KNOWN_CELL_FIELDS},
        "branches": None,
        "plot": None,
        "conflicts": [],
    }
    if branches:
        impl = _list(branches.get("implementation"))
        ref = _list(branches.get("reference"))
        differ = [i for i, (a, b) in enumerate(zip(impl, ref, strict=False)) if a != b]
        view["branches"] = {
            "raw": branches,
            "reference": runs_text(ref),
            "implementation": runs_text(impl),
            "differ": differ,
            "ambiguous": _list(branches.get("ambiguous_steps")),
            "stopped_at": branches.get("stopped_at"),
            "followed": [f for f in _list(branches.get("followed")) if isinstance(f, dict)],
            "counts": branches.get("counts") if isinstance(branches.get("counts"), dict) else {},
            "plot": plotdata.branch_data(branches),
        }
    view["plot"] = plotdata.error_data(cell.get("series"), div, view["resynchronised_from"])
    view["localization"] = _localization(cell.get("localization"))
    view["cause"] = _cause(cell.get("diagnosis"))
    view["layers"] = _layers(cell.get("layers"))
    view["state"] = _state(cell.get("state"))
    view["explanation"] = explanation
    view["reproducible"] = cell.get("reproducible")
    if against_variant and div:  # where the cell leaves the plain reference, said as such
        view["where"] = f"differs from reference at {view['where']}"
    if view["explanation"] and view["explanation"]["precision"]:
        view["where"] = f"{view['where']} · held to {view['explanation']['precision']}".lstrip(" ·")
    conflicts = [c for c in _list(cell.get("conflicts")) if isinstance(c, dict)]
    for i, other in enumerate(conflicts):
        view["conflicts"].append(cell_view(other, links, anchor=f"{anchor}-conflict{i + 1}"))
    return view


def _caveats(caveats: Any) -> list[dict[str, str]]:
    """``caveats``: limits on what the verdict claims (a compiled mode that may have run
    eagerly), each with its mark's label; entries without a code or a message are dropped."""
    out = []
    for c in _list(caveats):
        if not isinstance(c, dict) or not (c.get("code") or c.get("message")):
            continue
        code = str(c.get("code") or "caveat")
        message = str(c.get("message") or code)
        out.append({"code": code, "label": CAVEAT_LABELS.get(code, code), "message": message})
    return out


#: the start of the no-trace warning, as documents before ``caveats`` wrote it
NO_TRACE_WARNING = "a compiled mode recorded no trace"


def _legacy_caveats(cell: dict[str, Any]) -> list[dict[str, str]]:
    """A document written before ``caveats`` existed: a compiled mode's ``traces`` of 0 is the
    same caveat (its warning, where there is one, is its message)."""
    traces = cell.get("traces")
    if type(traces) is not int or traces != 0:
        return []
    said = [str(w) for w in _list(cell.get("warnings")) if str(w).startswith(NO_TRACE_WARNING)]
    message = said[0] if said else f"{NO_TRACE_WARNING}: it may have run eagerly"
    return _caveats([{"code": NO_TRACE, "message": message}])


def _layers(layers: Any) -> dict[str, Any] | None:
    """``layers``, the layer-level drill-down of a diverging cell: every layer's ratio at the
    first diverging step, the first layer out of tolerance marked."""
    if not isinstance(layers, dict):
        return None
    rows = [r for r in _list(layers.get("layers")) if isinstance(r, dict)]
    first = layers.get("first_layer")
    return {
        "step": layers.get("step"),
        "first_layer": first,
        "agreeing": len(_list(layers.get("agreeing"))),
        "rows": [
            {
                "layer": str(r.get("layer")),
                "error": fmt_number(r.get("error")),
                "tolerance": fmt_number(r.get("tolerance")),
                "ratio": fmt_ratio(as_float(r.get("ratio"))),
                "over": (as_float(r.get("ratio")) or 0) > 1,
                "first": r.get("layer") == first,
            }
            for r in rows
        ],
    }


def _state(state: Any) -> dict[str, Any] | None:
    """``state``: each non-trainable state quantity's worst step (BatchNorm statistics)."""
    if not isinstance(state, dict) or not state:
        return None
    ratios = [as_float(v.get("max_ratio")) for v in state.values() if isinstance(v, dict)]
    known = [r for r in ratios if r is not None]
    rows = [
        {
            "name": str(name),
            "ratio": fmt_ratio(as_float(v.get("max_ratio"))),
            "over": (as_float(v.get("max_ratio")) or 0) > 1,
            "step": v.get("step"),
            "error": fmt_number(v.get("error")),
            "tolerance": fmt_number(v.get("tolerance")),
        }
        for name, v in state.items()
        if isinstance(v, dict)
    ]
    return {"rows": rows, "max_ratio": fmt_ratio(max(known) if known else None)}


def _localization(loc: Any) -> dict[str, Any] | None:
    """``localization`` of a failing cell (docs/verdicts.md): the diagnosis in words, and
    whether re-running the failing step from the reference's own state still disagrees."""
    if not isinstance(loc, dict):
        return None
    forced = loc.get("teacher_forced") if isinstance(loc.get("teacher_forced"), dict) else None
    return {
        "diagnosis": str(loc.get("diagnosis") or ""),
        "phase": loc.get("phase"),
        "forced_from": forced.get("from_step") if forced else None,
        "forced_divergence": sentence(forced.get("first_divergence")) if forced else "",
    }


def _cause(found: Any) -> dict[str, Any] | None:
    """``diagnosis`` of a failing cell (docs/verdicts.md, Diagnosis): the outcome, each known
    difference found with its sources and what the variant does without it, and the
    declaration to paste."""
    if not isinstance(found, dict):
        return None
    members = []
    for m in _list(found.get("members")):
        if not isinstance(m, dict):
            continue
        variant = m.get("variant") if isinstance(m.get("variant"), dict) else {}
        members.append(
            {
                "id": str(m.get("id") or ""),
                "what": str(m.get("what") or ""),
                "sources": "; ".join(str(x) for x in _list(m.get("sources"))),
                "variant": ", ".join(f"{k} = {v}" for k, v in variant.items()),
                "without": sentence(m.get("without_it")),
            }
        )
    return {
        "outcome": str(found.get("outcome") or ""),
        "sentence": str(found.get("sentence") or ""),
        "members": members,
        "declaration": str(found.get("declaration") or ""),
        "seconds": found.get("seconds"),
    }


def _explanation(expl: Any) -> dict[str, Any] | None:
    """``explanation`` of a cell with a declared difference: the reason, the reference variant
    that reproduces it, and both sides' largest error so that its size stays visible."""
    if not isinstance(expl, dict):
        return None
    ref = expl.get("reference") if isinstance(expl.get("reference"), dict) else {}
    var = expl.get("variant_result") if isinstance(expl.get("variant_result"), dict) else {}
    variant = expl.get("variant")
    return {
        "reason": str(expl.get("reason") or ""),
        "variant": ", ".join(f"{k} = {v}" for k, v in variant.items())
        if isinstance(variant, dict)
        else str(variant or ""),
        "proved": expl.get("proved"),
        "precision": variant.get("compute_dtype") if isinstance(variant, dict) else None,
        "reference_ratio": largest_ratio(ref),
        "variant_ratio": largest_ratio(var),
        "variant_compared": var.get("compared_steps"),
        "variant_divergence": sentence(var.get("first_divergence")),
    }


def _step(value: Any) -> int | None:
    """A step number from the document, or None (absent, or not an integer)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
