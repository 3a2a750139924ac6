"""``equiv list``: the cases, each with where it comes from (built-in or which installed
package) and the case packages that could not be loaded (with why); each backend with whether
it is available here (and why not); and the declared differences (explanations) that a cell
may be ``explained`` by."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser("list", help="list cases and backends")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from equiv.backends.registry import all_backends
    from equiv.contract.case import case_catalog

    catalog = case_catalog()
    cases = catalog.cases
    found = all_backends()
    backends = [b.describe() for b in found.values()]
    declared = [
        {"declared_by": f"case {c.name}", **_describe(e)}
        for c in cases.values()
        for e in c.explanations
    ] + [
        {"declared_by": f"backend {b.id}", **_describe(e)}
        for b in found.values()
        for e in getattr(b, "explanations", ())
    ]
    if args.json:
        doc = {
            "cases": [
                {
                    "name": c.name,
                    "title": c.title,
                    "steps": c.default_steps,
                    "origin": catalog.origins[c.name],
                    "available": True,
                    "reason": "",
                }
                for c in cases.values()
            ]
            + [
                {"name": u.name, "origin": u.origin, "available": False, "reason": u.reason}
                for u in catalog.unavailable.values()
            ],
            "backends": backends,
            "declared_differences": declared,
        }
        print(json.dumps(doc, indent=1))
        return 0
    print("cases:")
    width = max([20, *(len(name) for name in catalog.names())])
    for spec in cases.values():
        origin = catalog.origins[spec.name]
        print(f"  {spec.name:{width}s} {spec.default_steps:5d} steps  {spec.title}  [{origin}]")
    for broken in catalog.unavailable.values():
        print(f"  {broken.name:{width}s} unavailable: {broken.reason}")
    print("backends:")
    for b in backends:
        state = "available" if b["available"] else f"unavailable: {b['reason']}"
        print(f"  {b['id']:20s} {state}")
    print("declared differences (a cell is 'explained' only when its variant is proven to match):")
    for d in declared:
        cases = f" / cases {d['cases']}" if d["declared_by"].startswith("backend") else ""
        where = f"{d['backends']}{cases} / dtype {d['dtypes']}"
        print(f"  {d['declared_by']}: {where}: {d['variant']}")
        print(f"    {d['reason']}")
    return 0


def _describe(explanation) -> dict:
    return {
        "backends": explanation.backends,
        "cases": explanation.cases,
        "dtypes": explanation.dtypes,
        "variant": explanation.variant,
        "reason": explanation.reason,
    }
