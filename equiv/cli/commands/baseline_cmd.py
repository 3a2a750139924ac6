"""``equiv baseline RUN --out FILE``: a stored baseline to commit and diff against.

    equiv baseline RUN --out FILE            RUN: a run folder or its parity.json
    equiv baseline RUN --into FILE           replace FILE's cells with RUN's (same settings,
                                             CPU and package versions), keep the others

Per cell: status, steps, how they were compared, the largest error ÷ tolerance, the declared
explanation and the cell's digest; with the run's settings, CPU and package versions. No
arrays: a full run's baseline is tens of kB. ``equiv diff FILE NEW`` labels a new run's cells
against it. Bad input is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equiv.cli.commands import fail


def register(sub) -> None:
    p = sub.add_parser(
        "baseline",
        help="write a stored baseline (to commit) from a run",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="equiv baseline RUN (--out FILE | --into FILE)",
    )
    p.add_argument("run", metavar="RUN", help="a run folder or its parity.json")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="FILE", help="write the baseline to FILE")
    where.add_argument("--into", metavar="FILE", help="merge RUN's cells into the baseline FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from equiv.cli.commands.run_cmd import check_writable
    from equiv.drift.baseline import CannotMerge, make_baseline, merge_baselines
    from equiv.drift.sides import BASELINE, document_path
    from equiv.results.document import (
        InvalidResults,
        atomic_write_bytes,
        load_document,
        read_json,
    )

    try:
        made = make_baseline(load_document(document_path(Path(args.run), "RUN")))
    except InvalidResults as exc:
        return fail("baseline", str(exc))
    target = Path(args.out or args.into)
    if problem := check_writable(target.parent):
        return fail("baseline", problem)
    if args.into:
        try:
            base = read_json(target)
        except InvalidResults as exc:
            return fail("baseline", f"the baseline {exc}")
        if not isinstance(base, dict) or base.get("schema") != BASELINE:
            return fail(
                "baseline", f"{target} is not an equiv baseline (expected schema {BASELINE!r})"
            )
        try:
            made = merge_baselines(base, made)
        except CannotMerge as exc:
            return fail("baseline", f"cannot merge into {target}: {exc}")
        except (KeyError, TypeError) as exc:
            return fail(
                "baseline", f"cannot merge into {target}: malformed baseline ({exc!r:.200})"
            )
    # indented and sorted: a baseline is committed, and its diffs are read in review
    atomic_write_bytes(target, (json.dumps(made, indent=1, sort_keys=True) + "\n").encode())
    print(f"Wrote {target} ({len(made['cells'])} cells)")
    return 0
