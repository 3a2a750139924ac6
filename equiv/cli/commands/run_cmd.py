"""``equiv run``: run a selection of cells and write DIR/parity.json (and the report)."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from equiv.cli.commands import fail


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
        default=None,
        help="worker processes running cells at once (default: the number of cores, fewer "
        "where the available memory would not hold 4 GB per worker)",
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
    p.add_argument(
        "--resume",
        metavar="DIR",
        default=None,
        help="finish a run that was cut off: run only the cells DIR/journal.jsonl lacks, with "
        "the settings it records, and write DIR's complete document",
    )
    p.add_argument(
        "--resync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="past the float32 horizon, compare each step from the reference's own state "
        "(ports that can load it; docs/tolerances.md); --no-resync stops comparing there "
        "(default: on)",
    )
    p.add_argument(
        "--worker-max-cells",
        type=positive_int,
        default=None,
        metavar="N",
        help="replace a worker process by a fresh one after N cells (default: no limit)",
    )
    p.add_argument(
        "--worker-max-rss",
        type=positive_int,
        default=None,
        metavar="MB",
        help="replace a worker process whose peak memory has passed MB before its next cell "
        "(default: no limit)",
    )
    p.add_argument(
        "--keep-arrays",
        action="store_true",
        help="write every cell's arrays to DIR/trajectories (data, initial, first and last "
        "step's parameters and gradients); default: a failing cell's at its first divergence",
    )
    add_reference_option(p)
    add_executor_options(p)
    add_declaration_options(p)
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print each cell's full reason (default: its first clause; the report has all)",
    )
    p.set_defaults(func=run)
    DEFAULTS.update({name: p.get_default(name) for name in RESUMED_SETTINGS})


def add_reference_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reference",
        metavar="PORT",
        default=None,
        help="hold every cell to this backend's port, run in float64 (its gradients applied by "
        "equiv's update rule), instead of the case's numpy reference, which is then not run "
        "at all (e.g. torch.eager; docs/port-reference.md)",
    )


def add_executor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: worker processes on this machine (default); ray: each cell a task on a "
        "Ray cluster (docs/ray.md)",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        default=None,
        help="with --executor ray: the cluster's address, or auto for the one `ray start` "
        "started on this machine (default: $RAY_ADDRESS, else a new local cluster)",
    )


def executor_problem(executor: str, address: str | None) -> str | None:
    """Why the cells cannot run on ``executor``, in one line; None where they can (for Ray:
    the cluster has been joined)."""
    if executor != "ray":
        return None
    from equiv.running.ray_executor import ExecutorError, connect

    try:
        connect(address)
    except ExecutorError as exc:
        return str(exc)
    return None


def add_declaration_options(p: argparse.ArgumentParser, diagnose_flag: bool = True) -> None:
    if diagnose_flag:
        p.add_argument(
            "--diagnose",
            action="store_true",
            help="for each failing cell, search the catalogue of known framework differences "
            "for the set that explains it (docs/verdicts.md, Diagnosis; the cell stays fail)",
        )
    p.add_argument(
        "--no-declarations",
        dest="declarations",
        action="store_false",
        help="run every cell as if its case and backend declared no explanation (with "
        "--diagnose: what a declaration should say)",
    )
    p.add_argument(
        "--strict-declarations",
        action="store_true",
        help="a declared difference that no longer shows (the cell matches the plain "
        "reference) fails the cell instead of warning",
    )


def reference_problem(port: str | None, cells: list) -> str | None:
    """Why ``--reference port`` cannot run, in one line; None where it can."""
    from equiv.backends.reference_port import refusal

    if port is None:
        return None
    if why := refusal(port):
        return f"--reference {port}: {why}"
    return None


#: the parser's defaults of the settings below (to tell which were given beside --resume)
DEFAULTS: dict[str, object] = {}

#: what --resume takes from the journal; given again beside it, they are a usage error
RESUMED_SETTINGS = (
    "case", "backend", "dtype", "steps", "seed", "out", "jobs", "threads", "cache_dir",
    "no_cache", "bench_rounds", "timeout", "isolate", "resync", "reference", "diagnose",
    "declarations", "strict_declarations", "keep_arrays", "worker_max_cells",
    "worker_max_rss", "executor",
)  # fmt: skip


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: a BaseException, so no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _Deferral:
    """How many ``signals_deferred`` blocks are open, and the signal that came meanwhile."""

    depth = 0
    pending: int | None = None


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM (``timeout``, a CI limit) and SIGINT (Ctrl-C) raise Interrupted in the run."""

    def handler(signum, frame):
        if _Deferral.depth:
            _Deferral.pending = _Deferral.pending or signum
            return
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """While a finished cell is kept (trajectory, journal line, the run's list): a signal
    that arrives then is raised when the block ends, so the cell is in both the journal and
    the partial document, or in neither. (Not ``pthread_sigmask``: that blocks the main
    thread only, and the kernel hands a process's signal to any other thread.)"""
    _Deferral.depth += 1
    try:
        yield
    finally:
        _Deferral.depth -= 1
        if not _Deferral.depth and _Deferral.pending is not None:
            signum, _Deferral.pending = _Deferral.pending, None
            raise Interrupted(signum)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """While the partial document is written: a second signal must not cut it short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
def calibration_directory(settings: dict) -> Iterator[Path]:
    """The calibration cache, which also keeps JAX's compilations (``equiv.running.compile_cache``);
    with --no-cache a folder of this run's own, removed after it."""
    from equiv.running.compile_cache import jax_compilations_kept_in
    from equiv.tolerance.store import default_directory

    with contextlib.ExitStack() as stack:
        if settings["no_cache"]:
            private = stack.enter_context(tempfile.TemporaryDirectory(prefix="equiv-calibrations-"))
            folder = Path(private)
        else:
            folder = Path(settings["cache_dir"]) if settings["cache_dir"] else default_directory()
        stack.enter_context(jax_compilations_kept_in(folder))
        yield folder


def run(args: argparse.Namespace) -> int:
    from equiv.results.journal import Journal
    from equiv.running.matrix import SelectionError, select_cells

    if args.resume is not None:
        return resume(args)
    try:
        cells = select_cells(args.case, args.backend, args.dtype)
    except SelectionError as exc:
        return fail("run", str(exc))
    if problem := reference_problem(args.reference, cells):
        return fail("run", problem)
    out = Path(args.out)
    problem = check_writable(out)
    if problem:
        return fail("run", problem)
    if problem := executor_problem(args.executor, args.ray_address):
        return fail("run", problem)
    settings = {name: getattr(args, name) for name in RESUMED_SETTINGS}
    if settings["jobs"] is None:
        from equiv.running.capacity import default_jobs

        capacity = default_jobs()
        settings["jobs"] = capacity.jobs
        if capacity.limited_by_memory and settings["isolate"] == "backend":
            print(f"equiv run: {capacity.limited_by_memory}", file=sys.stderr)
    settings["threads"] = args.threads or max(1, (os.cpu_count() or 1) // _jobs(settings))
    journal = Journal.start(out, settings, [c.id for c in cells])
    return execute(out, cells, settings, journal, earlier=[], verbose=args.verbose)


def _jobs(settings: dict) -> int:
    return settings["jobs"] if settings["isolate"] == "backend" else 1


def resume(args: argparse.Namespace) -> int:
    from equiv.results.journal import Journal, JournalError, read
    from equiv.running.matrix import SelectionError, select_cells

    given = [
        f"--{name.replace('_', '-')}"
        for name in RESUMED_SETTINGS
        if getattr(args, name) != DEFAULTS.get(name)
    ]
    if given:
        return fail(
            "run", f"--resume takes the run's settings from its journal; drop {', '.join(given)}"
        )
    out = Path(args.resume)
    try:
        contents = read(out)
        settings = contents.settings
        known = {
            c.id: c for c in select_cells(settings["case"], settings["backend"], settings["dtype"])
        }
    except (JournalError, SelectionError, KeyError) as exc:
        return fail("run", f"cannot resume {str(out)!r}: {exc}")
    unknown = [cell_id for cell_id in contents.missing if cell_id not in known]
    if unknown:
        missing = ", ".join(unknown)
        return fail("run", f"cannot resume {str(out)!r}: cells no longer available here: {missing}")
    problem = check_writable(out)
    if problem:
        return fail("run", problem)
    cells = [known[cell_id] for cell_id in contents.missing]
    if problem := executor_problem(settings.get("executor", "local"), args.ray_address):
        return fail("run", problem)
    print(f"equiv run: resuming {out}: {len(contents.done)} cells done, {len(cells)} to run")
    return execute(
        out,
        cells,
        settings,
        Journal.reopen(out),
        earlier=list(contents.done.values()),
        verbose=args.verbose,
    )


def execute(
    out: Path, cells: list, settings: dict, journal, earlier: list[dict], verbose: bool = False
) -> int:
    """Run ``cells``, journaling each as it finishes; write the document, complete or, when
    a signal cuts the run off, partial and marked incomplete (then exit 128 + the signal)."""
    from equiv.cli.progress import Progress
    from equiv.results.document import write_trajectory
    from equiv.results.history import Durations
    from equiv.running.matrix import run_cells
    from equiv.running.output import write_outputs
    from equiv.running.runner import RunOptions
    from equiv.running.workers import Recycle

    jobs = _jobs(settings)
    finished = []

    def keep(result) -> None:
        with signals_deferred():
            write_trajectory(out, result)
            journal.append(result)
            finished.append(result)

    stopped_by: int | None = None
    with calibration_directory(settings) as cache_dir:
        options = RunOptions(
            seed=settings["seed"],
            steps=settings["steps"],
            threads=settings["threads"],
            bench_rounds=max(0, settings["bench_rounds"]),
            timeout_s=settings["timeout"],
            calibration_dir=str(cache_dir),
            resync=bool(settings.get("resync")),  # a journal from before the flag: off
            reference=settings.get("reference"),
            diagnose=bool(settings.get("diagnose")),
            declarations=settings.get("declarations", True),
            strict_declarations=bool(settings.get("strict_declarations")),
            keep_arrays=bool(settings.get("keep_arrays")),
        )
        history = Durations(
            None if settings["no_cache"] else cache_dir, options.seed, options.steps
        )
        progress = Progress(
            cells, last=history.last, typical=history.typical(), jobs=jobs, verbose=verbose
        )
        with progress:  # on a terminal, its status line until the run ends, however it ends
            try:
                with interruptible():
                    run_cells(
                        cells,
                        options,
                        isolate=settings["isolate"],
                        progress=progress,
                        jobs=jobs,
                        estimate=history.estimate,
                        on_result=keep,
                        recycle=Recycle(
                            settings.get("worker_max_cells"), settings.get("worker_max_rss")
                        ),
                        executor=settings.get("executor", "local"),
                    )
            except Interrupted as exc:
                stopped_by = exc.signum
        with signals_ignored():
            history.record(finished)
            done = {e["id"] for e in earlier} | {r.cell.id for r in finished}
            missing = [c.id for c in cells if c.id not in done]
            incomplete = None
            if stopped_by is not None:
                name = signal.Signals(stopped_by).name
                incomplete = {
                    "reason": f"interrupted by {name} after {len(done)} of "
                    f"{len(done) + len(missing)} cells",
                    "missing": missing,
                    "resume": f"equiv run --resume {out}",
                }
            paths = write_outputs(
                out,
                finished,
                options,
                argv=sys.argv,
                jobs=jobs,
                earlier=earlier,
                incomplete=incomplete,
                executor=settings.get("executor", "local"),
            )
            if incomplete is None:
                journal.remove()
            else:
                journal.close()
    statuses = [e["status"] for e in earlier] + [r.status for r in finished]
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    wrote = ", ".join(str(p) for p in paths)
    if incomplete is not None:
        print(
            f"\nequiv run: {incomplete['reason']}; wrote the partial {wrote} "
            f"({summary or 'no cells'}); `equiv run --resume {out}` runs the {len(missing)} "
            "missing",
            file=sys.stderr,
        )
        return 128 + stopped_by
    print(f"{len(statuses)} cells: {summary}. Wrote {wrote}")
    return 1 if any(s in ("fail", "error", "timeout") for s in statuses) else 0
