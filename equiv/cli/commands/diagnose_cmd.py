"""``equiv diagnose``: why a failing cell differs, searched in the catalogue of known framework
differences (docs/verdicts.md, Diagnosis).

    equiv diagnose CASE-BACKEND-DTYPE [...] [--seed N] [--steps N] [--reference PORT]
    equiv diagnose --from DIR/parity.json        every failing cell of a run, with its settings

Each cell is run again (no benchmark) and, where it fails, searched; the result is printed with
the declaration that makes the cell ``explained``. Exit 0 when every failing cell was found,
1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equiv.cli.commands import fail
from equiv.cli.commands.run_cmd import (
    add_declaration_options,
    add_reference_option,
    positive_int,
    reference_problem,
    seed_int,
)


def register(sub) -> None:
    p = sub.add_parser(
        "diagnose",
        help="search the catalogue of known differences for why a cell fails",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("cells", nargs="*", metavar="CELL", help="case-backend-dtype, as listed")
    p.add_argument("--from", dest="document", metavar="PARITY.json", help="a run's document")
    p.add_argument("--seed", type=seed_int, default=None)
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--json", metavar="FILE", help="also write the diagnoses to FILE")
    add_reference_option(p)
    add_declaration_options(p, diagnose_flag=False)
    p.set_defaults(func=run)


def _cells_from(args) -> tuple[list, dict] | str:
    """The cells to diagnose and the run settings, or why not, in one line."""
    from equiv.running.matrix import SelectionError, select_cells

    settings = {
        "seed": args.seed,
        "steps": args.steps,
        "reference": args.reference,
        "declarations": args.declarations,
    }
    ids = list(args.cells)
    if args.document:
        try:
            doc = json.loads(Path(args.document).read_text(encoding="utf-8"))
            run_info, listed = doc["run"], doc["cells"]
            failing = [c["id"] for c in listed if c["status"] == "fail"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"cannot read {args.document!r} as a parity document: {exc}"
        for key in ("seed", "steps", "reference"):  # the run's own settings, unless given
            if settings[key] is None:
                settings[key] = run_info.get(key)
        # a run without declarations is diagnosed without them too
        settings["declarations"] = args.declarations and run_info.get("declarations", True)
        ids += failing
        if not ids:
            return f"{args.document} has no failing cell"
    if not ids:
        return "name a cell (case-backend-dtype) or --from a parity.json"
    cells = []
    for cell_id in ids:
        case, _, rest = cell_id.partition("-")
        backend, _, dtype = rest.rpartition("-")
        if not (case and backend and dtype):
            return f"{cell_id!r} is not a cell id (case-backend-dtype)"
        try:
            cells += select_cells([case], [backend], [dtype])
        except SelectionError as exc:
            return f"{cell_id}: {exc}"
    settings["seed"] = settings["seed"] or 0
    return cells, settings


def run(args: argparse.Namespace) -> int:
    from equiv.running.matrix import run_cells
    from equiv.running.runner import RunOptions

    chosen = _cells_from(args)
    if isinstance(chosen, str):
        return fail("diagnose", chosen)
    cells, settings = chosen
    if problem := reference_problem(settings["reference"], cells):
        return fail("diagnose", problem)
    options = RunOptions.verdict_only(
        seed=settings["seed"],
        steps=settings["steps"],
        reference=settings["reference"],
        diagnose=True,
        declarations=settings["declarations"],
        strict_declarations=args.strict_declarations,
    )
    results = run_cells(cells, options)
    out, unexplained = [], 0
    for result in results:
        reason = result.reason.split("\n", 1)[0][:300]
        print(f"{result.cell.id}: {result.status}" + (f": {reason}" if reason else ""))
        found = result.diagnosis
        if found is None:
            if result.status in ("fail", "error", "timeout"):
                unexplained += 1
            continue
        print(f"  diagnosis: {found['outcome']}: {found['sentence']}")
        for member in found["members"]:
            print(f"    - {member['id']}: {member['variant']} ({'; '.join(member['sources'])})")
        if found["declaration"]:
            print("  declare it in the case's spec to make the cell explained:")
            print("    " + found["declaration"].replace("\n", "\n    "))
        unexplained += found["outcome"] != "found"
        out.append({"id": result.cell.id, "status": result.status, "diagnosis": found})
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 1 if unexplained else 0
