"""``equiv selftest``: plant each catalogued bug, check it is caught where expected."""

from __future__ import annotations

import argparse

from equiv.cli.commands import fail


def register(sub) -> None:
    p = sub.add_parser("selftest", help="plant realistic bugs and check that each is detected")
    p.add_argument("--mutant", action="append", default=[], help="only this mutant id")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument(
        "--reference",
        metavar="PORT",
        default=None,
        help="hold each mutant's cell to this backend's port instead of the numpy reference "
        "(the mutant goes into the port under test only; docs/port-reference.md)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from equiv.cli.commands.run_cmd import reference_problem
    from equiv.quality.mutants import CATALOGUE
    from equiv.quality.selftest import describe_expected, run_selftest

    if problem := reference_problem(args.reference, []):
        return fail("selftest", problem)
    mutants = CATALOGUE
    if args.mutant:
        known = {m.id: m for m in CATALOGUE}
        unknown = [m for m in args.mutant if m not in known]
        if unknown:
            return fail("selftest", f"unknown mutant {', '.join(unknown)}; see --list")
        mutants = [known[m] for m in args.mutant]
    if args.list:
        for m in mutants:
            print(
                f"{m.id:34s} {m.kind} [{m.case}-{m.backend}-{m.dtype}] "
                f"expect {describe_expected(m.expected)}"
            )
        return 0
    outcomes = run_selftest(mutants, reference=args.reference)
    counted = [o for o in outcomes if not o.skipped]
    return 0 if counted and all(o.detected for o in counted) else 1
