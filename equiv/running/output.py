"""Everything a run writes into its output folder, in one place."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from equiv.backends.registry import all_backends
from equiv.checking.steplog import ALGORITHM
from equiv.contract.records import CellResult
from equiv.results.document import document_from_entries, write_json, write_trajectories
from equiv.running.environment import environment
from equiv.running.runner import RunOptions


def benchmark_method(
    options: RunOptions, jobs: int, disabled_by: str | None = None, executor: str = "local"
) -> str:
    """How the step timings were taken, in words for the report."""
    if disabled_by:
        return f"not taken: {disabled_by}"
    if options.bench_rounds <= 0:
        return "not taken (--bench-rounds 0)"
    how = (
        f"{options.bench_rounds} timed rounds of one training step after "
        f"{options.bench_warmup} warm-up rounds (pytest-benchmark), on the trainer of the "
        f"cell's parity run, right after it, with {options.threads} thread(s)"
    )
    if executor == "ray":
        return (
            f"{how}; as Ray tasks, each on {options.threads} CPU(s) of its own beside other "
            "cells (nothing paused while a cell was timed: compare timings of local runs)"
        )
    if jobs > 1:
        return (
            f"{how}; {jobs} workers ran cells side by side, and every other worker was paused "
            "(SIGSTOP) while a cell was timed: one cell at a time, nothing else running"
        )
    return f"{how}; one cell at a time, nothing else running"


def run_settings(
    options: RunOptions,
    jobs: int = 1,
    bench_disabled_by: str | None = None,
    executor: str = "local",
) -> dict:
    return {
        "seed": options.seed,
        "steps": options.steps,
        "threads": options.threads,
        "jobs": jobs,
        "bench_rounds": options.bench_rounds,
        "bench_warmup": options.bench_warmup,
        "benchmark_method": benchmark_method(options, jobs, bench_disabled_by, executor),
        "executor": executor,
        "timeout_s": options.timeout_s,
        "resync": options.resync,
        "reference": options.reference,
        "diagnose": options.diagnose,
        "declarations": options.declarations,
        "strict_declarations": options.strict_declarations,
        "keep_arrays": options.keep_arrays,
        "digest": ALGORITHM if options.digests else None,
    }


def write_outputs(
    out: Path,
    results: list[CellResult],
    options: RunOptions,
    argv: list[str] | None = None,
    jobs: int = 1,
    bench_disabled_by: str | None = None,
    earlier: list[dict[str, Any]] | None = None,
    incomplete: dict[str, Any] | None = None,
    executor: str = "local",
) -> list[Path]:
    """``earlier``: cells' entries an interrupted run finished (its journal), for --resume;
    ``incomplete``: this document is a cut-off run's (docs/parity-json.md)."""
    entries = [*(earlier or []), *(r.to_json() for r in results)]
    used = {e["backend"] for e in entries}
    backends = [b for b in all_backends().values() if b.id in used]
    env = environment(options.seed, options.threads, backends, argv)
    settings = run_settings(options, jobs, bench_disabled_by, executor)
    document = document_from_entries(entries, env, settings, incomplete)
    write_trajectories(out, results)
    html = _render(document, out)  # rendered before anything is replaced
    target = out / "parity.json"
    write_json(target, document)
    if html is None:  # never leave an old page beside new results
        (out / "parity.html").unlink(missing_ok=True)
        return [target]
    from equiv.report.render import write_html

    write_html(out / "parity.html", html)
    return [target, out / "parity.html"]


def _render(document: dict, out: Path) -> str | None:
    """parity.html from the document; a bug in the report must not cost the run its JSON."""
    try:
        from equiv.report.render import render_html

        return render_html(document, out_dir=out, json_dir=out)
    except Exception as exc:
        print(
            f"equiv: warning: parity.html not written ({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )
        return None
