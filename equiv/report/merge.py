"""Merging parity documents from several machines or CI jobs into one.

The rule that matters: a result is never silently overwritten. For each cell (case, backend,
dtype):

- identical results (same status and same ``max_error``) merge quietly; ``sources`` lists every
  input that had it;
- a ``skip`` gives way to a result that ran (one CI job lacks a framework that another has);
  the skip is kept in ``superseded`` and shown in the report;
- results that ran and differ are a **conflict**: the most severe one (error, timeout, fail,
  explained, pass) stands as the cell, the others are listed in its ``conflicts``, and the
  summary counts ``conflict``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from equiv.report import model
from equiv.results.document import SCHEMA, coverage, summarize

Key = tuple[str, str, str]
SOURCE_FIELDS = ("created", "environment", "run", "tolerance_policy", "summary")


def _key(cell: dict[str, Any]) -> Key:
    return (str(cell["case"]), str(cell["backend"]), str(cell["dtype"]))


def same_result(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two results of one cell agree when their status and largest errors are the same."""
    return a.get("status") == b.get("status") and (a.get("max_error") or {}) == (
        b.get("max_error") or {}
    )


def _candidates(cell: dict[str, Any], label: str) -> list[dict[str, Any]]:
    """A cell and, for an already merged input, the results it listed as conflicting."""
    head = copy.deepcopy(cell)
    others = head.pop("conflicts", None) or []
    head.setdefault("source", label)
    out = [head]
    for other in others:
        if isinstance(other, dict):
            other = copy.deepcopy(other)
            other.setdefault("source", label)
            out.append(other)
    return out


def _resolve(results: list[dict[str, Any]]) -> dict[str, Any]:
    distinct: list[dict[str, Any]] = []
    for result in results:
        for kept in distinct:
            if same_result(kept, result):
                for s in result.get("sources") or [result.get("source")]:
                    if s not in kept["sources"]:
                        kept["sources"].append(s)
                break
        else:
            result = dict(result)
            result["sources"] = list(result.get("sources") or [result.get("source")])
            distinct.append(result)
    ran = [r for r in distinct if r.get("status") != "skip"]
    superseded: list[dict[str, Any]] = []
    if ran and len(ran) < len(distinct):
        superseded = [
            {"source": s, "status": r.get("status"), "reason": r.get("reason", "")}
            for r in distinct
            if r.get("status") == "skip"
            for s in r["sources"]
        ]
        distinct = ran
    distinct.sort(key=lambda r: model.severity(model.status_of(r)))
    head = distinct[0]
    head["superseded"] = (head.get("superseded") or []) + superseded
    if not head["superseded"]:
        del head["superseded"]
    if len(distinct) > 1:
        head["conflicts"] = distinct[1:]
    return head


def merge_documents(inputs: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Merge (label, document) pairs, in order; labels name the inputs (their file paths)."""
    if not inputs:
        raise ValueError("nothing to merge")
    groups: dict[Key, list[dict[str, Any]]] = {}
    sources = []
    for label, document in inputs:
        for cell in document.get("cells", []):
            groups.setdefault(_key(cell), []).extend(_candidates(cell, label))
        if isinstance(document.get("sources"), list):  # an already merged input
            sources.extend(dict(s) for s in document["sources"] if isinstance(s, dict))
        else:
            sources.append({"file": label} | {f: document.get(f) for f in SOURCE_FIELDS})
    cells = [_resolve(groups[k]) for k in sorted(groups)]
    first = inputs[0][1]
    summary = summarize(cells)
    summary["conflict"] = sum(1 for c in cells if c.get("conflicts"))
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": first.get("environment", {}),
        "run": first.get("run", {}),
        "tolerance_policy": first.get("tolerance_policy", {}),
        "summary": summary,
        "coverage": coverage(cells),
        "sources": sources,
        "cells": cells,
    }


def settings_differ(document: dict[str, Any]) -> list[str]:
    """Run settings that differ between a merged document's inputs (their results are then not
    comparable, which is worth a line on the terminal)."""
    runs = [s.get("run") or {} for s in document.get("sources") or []]
    keys = sorted({k for r in runs for k in r if k in ("seed", "steps")})
    return [k for k in keys if len({repr(r.get(k)) for r in runs}) > 1]
