"""A stored baseline: what a run's cells must go on doing, small enough to commit.

Per cell, what ``equiv diff`` pairs and labels on (status, steps, how they were compared, the
largest error ÷ tolerance, the explanation, the cell's digest), with the run's settings and
what decides its numbers (package versions, CPU model and vector instructions), never an
array. ``equiv baseline RUN --out FILE`` writes one; ``equiv diff FILE NEW`` diffs against it.
"""

from __future__ import annotations

from typing import Any

from equiv.drift.sides import BASELINE

#: run settings a baseline keeps: what makes two runs' cells comparable
SETTINGS = ("seed", "steps", "threads", "resync", "reference", "declarations", "digest")
#: a cell's fields a baseline keeps
CELL_FIELDS = (
    "case",
    "backend",
    "dtype",
    "status",
    "steps",
    "compared_steps",
    "resynchronised_from",
    "max_ratio",
    "digest",
)


def make_baseline(document: dict[str, Any]) -> dict[str, Any]:
    env, run = document.get("environment") or {}, document.get("run") or {}
    cells = {}
    for cell in document["cells"]:
        entry = {k: cell.get(k) for k in CELL_FIELDS if k in cell}
        explanation = cell.get("explanation")
        if explanation:
            entry["explanation"] = {
                "reason": explanation.get("reason"),
                "variant": explanation.get("variant"),
                "variant_result": {
                    "max_ratio": (explanation.get("variant_result") or {}).get("max_ratio")
                },
            }
        cells[cell["id"]] = entry
    return {
        "schema": BASELINE,
        "created": document.get("created"),
        "settings": {k: run.get(k) for k in SETTINGS},
        "environment": {
            "cpu": env.get("cpu"),
            "cpu_features": env.get("cpu_features"),
            "versions": env.get("versions") or {},
        },
        "cells": cells,
    }


class CannotMerge(ValueError):
    pass


def merge_baselines(base: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``part``'s cells (a run of some cells only: a changed case, a new
    package); both must come from the same settings, CPU and package versions (a run of some
    backends records only their packages' versions: those must be base's)."""
    env, base_env = part["environment"], base["environment"]
    if part["settings"] != base["settings"]:
        raise CannotMerge("the runs differ in settings")
    if (env["cpu"], env["cpu_features"]) != (base_env["cpu"], base_env["cpu_features"]):
        raise CannotMerge("the runs come from different CPUs")
    if any(base_env["versions"].get(k) != v for k, v in env["versions"].items()):
        raise CannotMerge("the runs differ in package versions")
    return {**base, "cells": {**base["cells"], **part["cells"]}}
