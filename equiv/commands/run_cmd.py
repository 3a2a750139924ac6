"""``equiv run``: run a selection of cells and write DIR/parity.json (and the report)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
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
    p.add_argument(
        "--jobs",
        "-j",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="worker processes running cells at once (default: the number of cores)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="threads per worker (default: cores / jobs, so the cores are not oversubscribed)",
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="where calibrations are kept between runs (default: $EQUIV_CACHE_DIR or "
        "~/.cache/equiv)",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="compute every calibration afresh (still once per run, shared by its workers)",
    )
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


@contextlib.contextmanager
def calibration_directory(args: argparse.Namespace) -> Iterator[Path]:
    """The calibration cache; with --no-cache a folder of this run's own, removed after it."""
    if not args.no_cache:
        from equiv.calibration_store import default_directory

        yield Path(args.cache_dir) if args.cache_dir else default_directory()
        return
    with tempfile.TemporaryDirectory(prefix="equiv-calibrations-") as private:
        yield Path(private)


def run(args: argparse.Namespace) -> int:
    from equiv.history import Durations
    from equiv.matrix import Progress, SelectionError, run_cells, select_cells
    from equiv.output import write_outputs
    from equiv.results import write_trajectory
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
    jobs = args.jobs if args.isolate == "backend" else 1
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    with calibration_directory(args) as cache_dir:
        options = RunOptions(
            seed=args.seed,
            steps=args.steps,
            threads=threads,
            bench_rounds=max(0, args.bench_rounds),
            timeout_s=args.timeout,
            calibration_dir=str(cache_dir),
        )
        history = Durations(None if args.no_cache else cache_dir, args.seed, args.steps)
        progress = Progress(total=len(cells), planned=cells, estimate=history.estimate, jobs=jobs)
        results = run_cells(
            cells,
            options,
            isolate=args.isolate,
            progress=progress,
            jobs=jobs,
            estimate=history.estimate,
            on_result=lambda result: write_trajectory(out, result),
        )
        history.record(results)
    paths = write_outputs(out, results, options, argv=sys.argv, jobs=jobs)
    bad = [r for r in results if r.status in ("fail", "error", "timeout")]
    counts = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"{len(results)} cells: {summary}. Wrote {', '.join(str(p) for p in paths)}")
    return 1 if bad else 0
