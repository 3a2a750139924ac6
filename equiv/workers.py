"""Running cells in worker processes, one backend's group of cells per worker.

Why: Keras picks its backend once per process (``KERAS_BACKEND``), a segfault or ``os._exit``
in one framework must not end the run, a hang needs a process to kill, and benchmarks are
fairer when frameworks do not share thread pools. Records come back through a pipe as pickles,
which keep float64 arrays bit-exact.

A worker reports ("start", cell) before each cell and ("result", CellResult) after it. The
parent waits at most ``timeout_s`` per cell; a silent worker is killed and its cell becomes
``timeout``, a dead one makes its cell ``error`` with the exit code, and a fresh worker takes
the rest of the group.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable

from equiv.implementations import ImplSource
from equiv.records import Cell, CellResult
from equiv.runner import RunOptions, run_cell

Job = tuple[Cell, ImplSource | None]


def _worker_main(conn, jobs: list[Job], options: RunOptions, env: dict[str, str]) -> None:
    os.environ.update(env)
    try:
        for cell, impl in jobs:
            conn.send(("start", cell))
            conn.send(("result", run_cell(cell, options, impl=impl)))
    finally:
        conn.close()


def run_group(
    jobs: list[Job],
    options: RunOptions,
    env: dict[str, str] | None = None,
    on_start: Callable[[Cell], None] | None = None,
) -> Iterable[CellResult]:
    """Run ``jobs`` in a worker; yield each result as it arrives, in job order."""
    ctx = mp.get_context("spawn")
    pending = list(jobs)
    while pending:
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker_main, args=(child, pending, options, env or {}))
        proc.start()
        child.close()
        current: Cell | None = None
        started = time.monotonic()
        try:
            while pending:
                remaining = options.timeout_s - (time.monotonic() - started)
                if remaining <= 0 or not parent.poll(remaining):
                    cell = current or pending[0][0]
                    proc.kill()
                    yield CellResult(
                        cell=cell,
                        status="timeout",
                        reason=f"no result within {options.timeout_s:g} s; the worker was killed",
                        steps=options.steps_for(cell.case),
                    )
                    pending.pop(0)
                    break
                try:
                    kind, payload = parent.recv()
                except (EOFError, ConnectionError, OSError):
                    proc.join(5)
                    cell = current or pending[0][0]
                    yield CellResult(
                        cell=cell,
                        status="error",
                        reason=f"worker process died (exit code {proc.exitcode}) in this cell",
                        steps=options.steps_for(cell.case),
                    )
                    pending.pop(0)
                    break
                if kind == "start":
                    current, started = payload, time.monotonic()
                    if on_start:
                        on_start(payload)
                else:
                    pending.pop(0)
                    current, started = None, time.monotonic()
                    yield payload
        finally:
            parent.close()
            if proc.is_alive():
                proc.join(1)
                if proc.is_alive():
                    proc.kill()
            proc.join(5)
