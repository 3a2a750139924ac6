"""``equiv run``: run a selection of cells and write DIR/parity.json (and the report)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def seed_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seed must be non-negative, got {value}")
    return value


def register(sub) -> None:
    p = sub.add_parser("run", help="run the parity matrix and write DIR/parity.json")
    p.add_argument("--case", action="append", default=[], help="case name (repeatable)")
    p.add_argument("--backend", action="append", default=[], help="backend id (repeatable)")
    p.add_argument("--dtype", action="append", default=[], help="float32 or float64 (repeatable)")
    p.add_argument("--steps", type=positive_int, help="steps per cell (default: the case's)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--out", default="reports", help="output folder (default: reports)")
    p.add_argument("--threads", type=positive_int, default=os.cpu_count() or 1)
    p.add_argument("--bench-rounds", type=int, default=30, help="0 disables benchmarks")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per cell (workers)")
    p.add_argument(
        "--isolate",
        choices=("backend", "none"),
        default="backend",
        help="backend: one worker process per backend (default); none: all in this process",
    )
    p.set_defaults(func=run)


def check_writable(out: Path) -> str | None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".equiv-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        return f"cannot write to --out {str(out)!r}: {exc.strerror or exc}"
    return None


def run(args: argparse.Namespace) -> int:
    from equiv.matrix import Progress, SelectionError, run_cells, select_cells
    from equiv.output import write_outputs
    from equiv.runner import RunOptions

    try:
        cells = select_cells(args.case, args.backend, args.dtype)
    except SelectionError as exc:
        print(f"equiv run: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    problem = check_writable(out)
    if problem:
        print(f"equiv run: error: {problem}", file=sys.stderr)
        return 2
    options = RunOptions(
        seed=args.seed,
        steps=args.steps,
        threads=args.threads,
        bench_rounds=max(0, args.bench_rounds),
        timeout_s=args.timeout,
    )
    progress = Progress(total=len(cells))
    results = run_cells(cells, options, isolate=args.isolate, progress=progress)
    paths = write_outputs(out, results, options, argv=sys.argv)
    bad = [r for r in results if r.status in ("fail", "error", "timeout")]
    counts = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"{len(results)} cells: {summary}. Wrote {', '.join(str(p) for p in paths)}")
    return 1 if bad else 0
