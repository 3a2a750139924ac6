"""``equiv sweep``: the matrix over many seeds; exit 1 on any false alarm."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from equiv.cli.commands import fail
from equiv.cli.commands.run_cmd import (
    add_executor_options,
    add_reference_option,
    calibration_directory,
    check_writable,
    executor_problem,
    positive_int,
    reference_problem,
    seed_int,
)


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run the matrix over many seeds and report the margins")
    p.add_argument("--seeds", type=positive_int, default=20, help="seeds 0..N-1 (default 20)")
    p.add_argument("--case", action="append", default=[])
    p.add_argument("--backend", action="append", default=[])
    p.add_argument("--dtype", action="append", default=[])
    p.add_argument("--steps", type=positive_int, help="default: each case's own")
    p.add_argument("--first-seed", type=seed_int, default=0, help="seeds FIRST..FIRST+N-1")
    p.add_argument(
        "--out", default="reports", help="writes DIR/sweep.json (after every seed, and at the end)"
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="threads per framework (default 1: no timing here, and no oversubscription)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="the calibration store, shared by the sweep's worker processes and by sweeps of "
        "other backends (default: $EQUIV_CACHE_DIR or ~/.cache/equiv, as equiv run)",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="compute every calibration afresh (still once per sweep, shared by its workers)",
    )
    p.add_argument(
        "--isolate",
        choices=("backend", "none"),
        default="backend",
        help="backend: each seed's cells in fresh worker processes, one per backend (a crash or "
        "a framework's growing caches stay there; default); none: all in this process",
    )
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        default=[],
        metavar="SWEEP_JSON",
        help="run nothing: merge these sweep.json files (other backends or seeds; a later "
        "file's cell replaces an earlier one's, and is listed) into --out",
    )
    p.add_argument(
        "--resync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="past the float32 horizon, compare each step from the reference's own state, as "
        "equiv run does (default: on)",
    )
    add_reference_option(p)
    add_executor_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from equiv.quality.sweep import ACCEPTED, margin_plot, markdown_table, merge_reports, run_sweep
    from equiv.results.document import atomic_write_bytes
    from equiv.running.matrix import SelectionError, select_cells

    out = Path(args.out)
    if problem := check_writable(out):
        return fail("sweep", problem)

    def write(report):
        atomic_write_bytes(out / "sweep.json", json.dumps(report, indent=1).encode())

    if args.sources:
        try:
            sources = [json.loads(Path(s).read_text()) for s in args.sources]
            report = merge_reports(sources)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return fail("sweep", f"cannot merge {args.sources}: {exc}")
        for name, source in zip(args.sources, sources, strict=True):
            if not source.get("complete", True):  # a checkpoint of a sweep that was cut off
                seeds = ", ".join(str(s) for s in source.get("seeds", []))
                print(f"incomplete sweep (cut off): {name}: only seeds {seeds or 'none'} ran")
    else:
        try:
            cells = select_cells(args.case, args.backend, args.dtype)
        except SelectionError as exc:
            return fail("sweep", str(exc))
        if problem := reference_problem(args.reference, cells):
            return fail("sweep", problem)
        if problem := executor_problem(args.executor, args.ray_address):
            return fail("sweep", problem)
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        settings = {"cache_dir": args.cache_dir, "no_cache": args.no_cache}
        with calibration_directory(settings) as cache_dir:
            report = run_sweep(
                seeds,
                args.case,
                args.backend,
                args.dtype,
                args.steps,
                threads=args.threads,
                checkpoint=write,
                calibration_dir=str(cache_dir),
                isolate=args.isolate,
                resync=args.resync,
                reference=args.reference,
                executor=args.executor,
            )
    write(report)
    atomic_write_bytes(out / "sweep-margins.svg", margin_plot(report["rows"]).encode())
    print(markdown_table(report["summary"]))
    for row in report.get("replaced", []):
        print(
            f"replaced by a later sweep: seed {row['seed']} {row['case']}-{row['backend']}-"
            f"{row['dtype']}: {row['was']} -> {row['now']}"
        )
    for row in report["rows"]:
        if row["status"] not in ACCEPTED:
            print(
                f"false alarm: seed {row['seed']} {row['case']}-{row['backend']}-"
                f"{row['dtype']}: {row['status']}: {row['reason']}"
            )
    print(
        f"false alarms: {report['summary']['false_alarms']} in {len(report['rows'])} cells; "
        f"wrote {out / 'sweep.json'} and {out / 'sweep-margins.svg'}"
    )
    return 1 if report["summary"]["false_alarms"] else 0
