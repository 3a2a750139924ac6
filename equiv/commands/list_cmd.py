"""``equiv list``: the cases, and each backend with whether it is available here (and why not)."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("list", help="list cases and backends")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from equiv.case import all_cases
    from equiv.registry import all_backends

    cases = all_cases()
    backends = [b.describe() for b in all_backends().values()]
    if args.json:
        doc = {
            "cases": [
                {"name": c.name, "title": c.title, "steps": c.default_steps} for c in cases.values()
            ],
            "backends": backends,
        }
        print(json.dumps(doc, indent=1))
        return 0
    print("cases:")
    for spec in cases.values():
        print(f"  {spec.name:20s} {spec.default_steps:5d} steps  {spec.title}")
    print("backends:")
    for b in backends:
        state = "available" if b["available"] else f"unavailable: {b['reason']}"
        print(f"  {b['id']:20s} {state}")
    return 0
