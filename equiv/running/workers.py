"""Running cells in worker processes: one backend's cells per worker, several workers at once.

Why processes: Keras picks its backend once per process (``KERAS_BACKEND``), a segfault or
``os._exit`` in one framework must not end the run, a hang needs a process to kill, and a
process imports only the framework its cells need. Records come back through a pipe as
pickles, which keep float64 arrays bit-exact.

The conversation with a worker, one job at a time:

    worker -> parent: ("ready",) once; then per job ("start", cell), ("phase", name)...,
                      ("bench",) / ("bench-done",) around its benchmark, ("result", CellResult)
    parent -> worker: ("run", job), ("go",) to answer ("bench",), ("stop",)

Benchmarks are timed with nothing else running: a worker asks before it times its steps, and
the parent pauses every other worker (SIGSTOP) until it is done (SIGCONT). The benchmark thus
times the very trainer the parity run used, right after it, as a single-process run would.

The parent waits at most ``timeout_s`` per cell (time spent paused does not count); a silent
worker is killed and its cell becomes ``timeout``, a dead one makes its cell ``error`` with the
exit code, and a fresh worker takes the rest of the backend's cells.

Workers ignore SIGINT and SIGTERM and die with their parent (``_die_with_parent``): a run that
is stopped stops its workers, whatever signal stopped it.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from equiv.backends.implementations import ImplSource
from equiv.contract.records import Cell, CellResult
from equiv.running.runner import RunOptions, run_cell

Job = tuple[Cell, ImplSource | None]
#: pausing other workers needs job control signals (not on Windows: there, one job at a time)
CAN_PAUSE = hasattr(signal, "SIGSTOP")


def _die_with_parent(parent_pid: int) -> None:
    """A worker never outlives its run, even one killed with SIGKILL: on Linux the kernel
    sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); elsewhere, and as a backstop,
    a thread watches for the worker being handed to another parent."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))
    if os.getppid() != parent_pid:  # the parent died before the request above took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="equiv-parent-watch", daemon=True).start()


def _worker_main(
    conn: Connection,
    options: RunOptions,
    env: dict[str, str],
    hides: tuple[str, ...] = (),
    parent_pid: int | None = None,
) -> None:
    # The parent decides when a worker ends (a SIGTERM or Ctrl-C to the process group stops
    # the run through the parent, which kills its workers); a signal here would only turn a
    # finished cell into an error.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    os.environ.update(env)
    for name in hides:  # see Backend.worker_hides
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def exclusive() -> Iterator[None]:
        conn.send(("bench",))
        if conn.recv() != ("go",):
            raise RuntimeError("equiv worker: expected permission to benchmark")
        try:
            yield
        finally:
            conn.send(("bench-done",))

    conn.send(("ready",))
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            if message[0] != "run":
                return
            cell, impl = message[1]
            conn.send(("start", cell))
            result = run_cell(
                cell,
                options,
                impl=impl,
                exclusive=exclusive,
                on_phase=lambda phase: conn.send(("phase", phase)),
            )
            conn.send(("result", result))
    finally:
        conn.close()


@dataclass(eq=False)
class Group:
    """A backend's cells and the environment its worker needs."""

    jobs: list[Job]
    env: dict[str, str] = field(default_factory=dict)
    hides: tuple[str, ...] = ()


@dataclass(eq=False)
class _Worker:
    group: Group
    proc: mp.process.BaseProcess
    conn: Connection
    spawned: float
    startup_s: float | None = None
    current: Cell | None = None
    #: when the current job's clock started (moved forward by the time spent paused)
    started: float = 0.0
    paused_since: float | None = None
    stopped: bool = False

    def pause(self, now: float) -> None:
        if self.paused_since is None:
            self.paused_since = now

    def resume(self, now: float) -> None:
        if self.paused_since is not None:
            self.started += now - self.paused_since
            self.paused_since = None


def _spawn(options: RunOptions, group: Group) -> _Worker:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(
        target=_worker_main, args=(child, options, group.env, group.hides, os.getpid())
    )
    proc.start()
    child.close()
    now = time.monotonic()
    return _Worker(group, proc, parent, spawned=now, started=now)


def _send_next(worker: _Worker) -> None:
    worker.conn.send(("run", worker.group.jobs[0]))
    worker.current, worker.started = None, time.monotonic()


def _failed(options: RunOptions, worker: _Worker, status: str, reason: str) -> CellResult:
    cell = worker.current or worker.group.jobs[0][0]
    worker.group.jobs.pop(0)
    return CellResult(cell=cell, status=status, reason=reason, steps=options.steps_for(cell.case))


def _end(worker: _Worker, kill: bool = False) -> None:
    with contextlib.suppress(OSError):
        worker.conn.close()
    if kill and worker.proc.is_alive():
        worker.proc.kill()
    worker.proc.join(5)
    if worker.proc.is_alive():
        worker.proc.kill()
        worker.proc.join(5)


class WorkerPool:
    """Runs groups of cells in up to ``jobs`` worker processes at a time."""

    def __init__(
        self,
        options: RunOptions,
        jobs: int = 1,
        on_start: Callable[[Cell], None] | None = None,
        on_phase: Callable[[Cell, str], None] | None = None,
    ):
        self.options = options
        self.jobs = max(1, jobs if CAN_PAUSE else 1)
        self.on_start = on_start
        self.on_phase = on_phase

    def run(self, groups: Iterable[Group]) -> Iterator[CellResult]:
        """Yield each cell's result as it arrives (groups in the order given, as slots free)."""
        queue = deque(g for g in groups if g.jobs)
        active: list[_Worker] = []
        waiting: deque[_Worker] = deque()  # asked to benchmark, not yet allowed
        holder: _Worker | None = None  # benchmarking now; every other worker is paused

        def signal_all(sig: int, now: float, stop: bool) -> None:
            for w in active:
                if w is holder or w.stopped == stop or not w.proc.is_alive():
                    continue
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.proc.pid, sig)
                w.stopped = stop
                if stop:
                    w.pause(now)
                elif w not in waiting:
                    w.resume(now)

        def release(now: float) -> None:
            nonlocal holder
            holder = None
            if CAN_PAUSE:
                signal_all(signal.SIGCONT, now, stop=False)
            grant(now)

        def grant(now: float) -> None:
            nonlocal holder
            if holder is not None or not waiting:
                return
            holder = waiting.popleft()
            if CAN_PAUSE:
                signal_all(signal.SIGSTOP, now, stop=True)
            holder.resume(now)
            holder.conn.send(("go",))

        def retire(worker: _Worker, kill: bool) -> None:
            if worker in waiting:
                waiting.remove(worker)
            active.remove(worker)
            _end(worker, kill=kill)
            if worker.group.jobs:  # a fresh worker takes the rest of the group
                queue.appendleft(worker.group)
            if worker is holder:
                release(time.monotonic())

        try:
            while queue or active:
                while queue and len(active) < self.jobs:
                    active.append(_spawn(self.options, queue.popleft()))
                now = time.monotonic()
                running = [w for w in active if w.paused_since is None]
                deadline = min(
                    (w.started + self.options.timeout_s for w in running), default=now + 60
                )
                for conn in wait([w.conn for w in active], timeout=max(0.0, deadline - now)):
                    worker = next((w for w in active if w.conn is conn), None)
                    if worker is None:  # retired while handling an earlier message
                        continue
                    try:
                        message = conn.recv()
                    except (EOFError, ConnectionError, OSError):
                        worker.proc.join(5)
                        code = worker.proc.exitcode
                        yield _failed(
                            self.options,
                            worker,
                            "error",
                            f"worker process died (exit code {code}) in this cell",
                        )
                        retire(worker, kill=True)
                        continue
                    kind = message[0]
                    now = time.monotonic()
                    if kind == "ready":
                        worker.startup_s = now - worker.spawned
                        _send_next(worker)
                    elif kind == "start":
                        worker.current, worker.started = message[1], now
                        if self.on_start:
                            self.on_start(message[1])
                    elif kind == "phase":
                        if self.on_phase and worker.current:
                            self.on_phase(worker.current, message[1])
                    elif kind == "bench":
                        worker.pause(now)
                        waiting.append(worker)
                        grant(now)
                    elif kind == "bench-done":
                        release(now)
                    elif kind == "result":
                        result: CellResult = message[1]
                        if worker.startup_s is not None:
                            result.phases_s = {"startup": worker.startup_s, **result.phases_s}
                            worker.startup_s = None
                        worker.group.jobs.pop(0)
                        worker.current = None
                        if worker.group.jobs:
                            _send_next(worker)
                        else:
                            with contextlib.suppress(OSError):
                                worker.conn.send(("stop",))
                            retire(worker, kill=False)
                        yield result
                now = time.monotonic()
                for worker in list(active):
                    limit = self.options.timeout_s
                    if worker.paused_since is None and now - worker.started > limit:
                        yield _failed(
                            self.options,
                            worker,
                            "timeout",
                            f"no result within {limit:g} s; the worker was killed",
                        )
                        retire(worker, kill=True)
        finally:
            for worker in active:
                _end(worker, kill=True)


class WorkerSession:
    """One worker kept for many cells, run one at a time as they are asked for: pytest's
    matrix runs a backend that needs its own process this way, paying its imports once."""

    def __init__(
        self, options: RunOptions, env: dict[str, str] | None = None, hides: tuple[str, ...] = ()
    ):
        self.options = options
        self.env = dict(env or {})
        self.hides = hides
        self.worker: _Worker | None = None

    def run(self, job: Job) -> CellResult:
        if self.worker is None or not self.worker.proc.is_alive():
            self.worker = _spawn(self.options, Group([], self.env, self.hides))
            self.worker.group.jobs.append(job)
        else:
            self.worker.group.jobs.append(job)
            _send_next(self.worker)
        worker, limit = self.worker, self.options.timeout_s
        while True:
            if not worker.conn.poll(max(0.0, worker.started + limit - time.monotonic())):
                self.close(kill=True)
                return _failed(
                    self.options, worker, "timeout", f"no result within {limit:g} s; killed"
                )
            try:
                kind, *payload = worker.conn.recv()
            except (EOFError, ConnectionError, OSError):
                worker.proc.join(5)
                code = worker.proc.exitcode
                self.close(kill=True)
                reason = f"worker process died (exit code {code}) in this cell"
                return _failed(self.options, worker, "error", reason)
            if kind == "ready":
                _send_next(worker)
            elif kind == "start":
                worker.current, worker.started = payload[0], time.monotonic()
            elif kind == "bench":
                worker.conn.send(("go",))  # nothing else runs in this worker's name
            elif kind == "result":
                worker.group.jobs.pop(0)
                worker.current = None
                return payload[0]

    def close(self, kill: bool = False) -> None:
        if self.worker is not None:
            if not kill:
                with contextlib.suppress(OSError):
                    self.worker.conn.send(("stop",))
            _end(self.worker, kill=kill)
            self.worker = None


def run_group(
    jobs: list[Job],
    options: RunOptions,
    env: dict[str, str] | None = None,
    on_start: Callable[[Cell], None] | None = None,
    hides: tuple[str, ...] = (),
) -> Iterable[CellResult]:
    """Run ``jobs`` in one worker; yield each result as it arrives, in job order."""
    pool = WorkerPool(options, jobs=1, on_start=on_start)
    yield from pool.run([Group(list(jobs), dict(env or {}), hides)])
