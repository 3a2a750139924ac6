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

A worker's stderr (fd 2, its frameworks' C++ logs included) goes through a pipe to the parent,
which passes each line on (``on_output``, else its own stderr) but the frameworks' start-up
banners (``BANNERS``): TensorFlow 2.21 logs them through absl from its libraries' static
initialisers, as they load, and no ``TF_CPP_MIN_LOG_LEVEL`` silences them (3 neither, set
before Python starts); turning oneDNN off (``TF_ENABLE_ONEDNN_OPTS=0``) would drop the oneDNN
line and change numerics. The parent reads the pipe, not the worker: what a worker wrote just
before it crashed still arrives.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
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
from equiv.running.memory import release_freed_memory
from equiv.running.runner import RunOptions, run_cell

Job = tuple[Cell, ImplSource | None]
#: pausing other workers needs job control signals (not on Windows: there, one job at a time)
CAN_PAUSE = hasattr(signal, "SIGSTOP")
#: a worker's fd 2 can be a pipe to the parent (not on Windows: there, it keeps its stderr)
CAN_RELAY = os.name == "posix"

#: lines of a worker's stderr that say nothing about the run: the frameworks' start-up banners
#: (each library of TensorFlow that holds a copy of absl prints the first two once per process)
#: and a message TensorFlow logs as an error for a tf.data attribute its own Keras sets
BANNERS = re.compile(
    "|".join(
        (
            r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to",
            r"port\.cc:\d+\] oneDNN custom operations are on\.",
            r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use available",
            r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate",
            r"node_def_util\.cc:\d+\] NodeDef mentions attribute use_unbounded_threadpool which",
        )
    )
)


def is_banner(line: str) -> bool:
    return BANNERS.search(line) is not None


def _to_stderr(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # closed or replaced (pytest's capture)
        with contextlib.suppress(OSError):
            os.write(2, (line + "\n").encode(errors="replace"))


class StderrRelay(threading.Thread):
    """Reads a worker's stderr pipe until every writer has closed it (the worker and any
    process it started), passing each line that is not a banner to ``sink``."""

    #: a line longer than this is passed on in pieces (a worker's output without newlines)
    LIMIT = 1 << 16

    def __init__(self, fd: int, sink: Callable[[str], None] | None = None) -> None:
        super().__init__(name="equiv-worker-stderr", daemon=True)
        self.fd = fd
        self.sink = sink or _to_stderr

    def _emit(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        if is_banner(line):
            return
        try:
            self.sink(line)
        except Exception:  # a failing sink must not stop the pipe being drained
            _to_stderr(line)

    def run(self) -> None:
        pending = b""
        try:
            while True:
                try:
                    chunk = os.read(self.fd, self.LIMIT)
                except InterruptedError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._emit(line)
                if len(pending) >= self.LIMIT:
                    self._emit(pending)
                    pending = b""
            if pending:
                self._emit(pending)
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)


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


def hide_modules(names: Iterable[str]) -> None:
    """Make ``names`` unimportable in this process (``Backend.worker_hides``): the import
    fails fast instead of loading a framework the cells never use."""
    for name in names:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def failure(options: RunOptions, cell: Cell, status: str, reason: str) -> CellResult:
    """The record of a cell whose process gave no result (killed, dead, lost)."""
    return CellResult(cell=cell, status=status, reason=reason, steps=options.steps_for(cell.case))


def _worker_main(
    conn: Connection,
    options: RunOptions,
    env: dict[str, str],
    hides: tuple[str, ...] = (),
    parent_pid: int | None = None,
    stderr: Connection | None = None,
) -> None:
    if stderr is not None:  # fd 2, C++ logging included, to the parent's StderrRelay
        sys.stderr.flush()
        os.dup2(stderr.fileno(), 2)
        stderr.close()
    # The parent decides when a worker ends (a SIGTERM or Ctrl-C to the process group stops
    # the run through the parent, which kills its workers); a signal here would only turn a
    # finished cell into an error.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    os.environ.update(env)
    hide_modules(hides)

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
            release_freed_memory()  # the next cell starts from the live memory, not the peak
    finally:
        conn.close()


@dataclass(eq=False)
class Group:
    """A backend's cells and the environment its worker needs."""

    jobs: list[Job]
    env: dict[str, str] = field(default_factory=dict)
    hides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recycle:
    """When a worker is replaced by a fresh one before its next cell: memory grows with the
    cells a worker has run (TensorFlow's graphs and kernels, XLA's compiled executables,
    Keras's models are not all released), so a long group is split over several processes.
    None: no limit of that kind."""

    #: cells a worker runs at most
    max_cells: int | None = None
    #: a worker whose peak resident memory has passed this (MB) runs no further cell
    max_rss_mb: float | None = None

    def due(self, cells: int, peak_rss_mb: float | None) -> bool:
        if self.max_cells is not None and cells >= self.max_cells:
            return True
        return (
            self.max_rss_mb is not None
            and peak_rss_mb is not None
            and peak_rss_mb > self.max_rss_mb
        )


@dataclass(eq=False)
class _Worker:
    group: Group
    proc: mp.process.BaseProcess
    conn: Connection
    spawned: float
    relay: StderrRelay | None = None
    startup_s: float | None = None
    current: Cell | None = None
    #: when the current job's clock started (moved forward by the time spent paused)
    started: float = 0.0
    paused_since: float | None = None
    stopped: bool = False
    #: cells this process has finished
    cells: int = 0

    def pause(self, now: float) -> None:
        if self.paused_since is None:
            self.paused_since = now

    def resume(self, now: float) -> None:
        if self.paused_since is not None:
            self.started += now - self.paused_since
            self.paused_since = None


def _spawn(
    options: RunOptions, group: Group, on_output: Callable[[str], None] | None = None
) -> _Worker:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=True)
    reader, writer = ctx.Pipe(duplex=False) if CAN_RELAY else (None, None)
    proc = ctx.Process(
        target=_worker_main, args=(child, options, group.env, group.hides, os.getpid(), writer)
    )
    try:
        proc.start()
    finally:
        child.close()
        if writer is not None:
            writer.close()
    relay = None
    if reader is not None:
        relay = StderrRelay(os.dup(reader.fileno()), on_output)
        reader.close()
        relay.start()
    now = time.monotonic()
    return _Worker(group, proc, parent, spawned=now, started=now, relay=relay)


def _flush_output(worker: _Worker, timeout: float = 1.0) -> None:
    """Wait (briefly: a process the worker started may hold its stderr) for the last of a
    finished worker's output, so that it comes before what the parent says next."""
    if worker.relay is not None:
        worker.relay.join(timeout)


def _send_next(worker: _Worker) -> None:
    worker.conn.send(("run", worker.group.jobs[0]))
    worker.current, worker.started = None, time.monotonic()


def _failed(options: RunOptions, worker: _Worker, status: str, reason: str) -> CellResult:
    cell = worker.current or worker.group.jobs[0][0]
    worker.group.jobs.pop(0)
    return failure(options, cell, status, reason)


def _end(worker: _Worker, kill: bool = False) -> None:
    with contextlib.suppress(OSError):
        worker.conn.close()
    if kill and worker.proc.is_alive():
        worker.proc.kill()
    worker.proc.join(5)
    if worker.proc.is_alive():
        worker.proc.kill()
        worker.proc.join(5)
    _flush_output(worker)


class WorkerPool:
    """Runs groups of cells in up to ``jobs`` worker processes at a time."""

    def __init__(
        self,
        options: RunOptions,
        jobs: int = 1,
        on_start: Callable[[Cell], None] | None = None,
        on_phase: Callable[[Cell, str], None] | None = None,
        on_output: Callable[[str], None] | None = None,
        recycle: Recycle | None = None,
    ):
        self.options = options
        self.jobs = max(1, jobs if CAN_PAUSE else 1)
        self.recycle = recycle or Recycle()
        self.on_start = on_start
        self.on_phase = on_phase
        #: each line the workers write to stderr, banners left out (default: to stderr)
        self.on_output = on_output

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
                    active.append(_spawn(self.options, queue.popleft(), self.on_output))
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
                        _flush_output(worker)  # what it said as it died, before its cell
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
                        worker.cells += 1
                        due = self.recycle.due(worker.cells, result.peak_rss_mb)
                        if worker.group.jobs and not due:
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
        self,
        options: RunOptions,
        env: dict[str, str] | None = None,
        hides: tuple[str, ...] = (),
        recycle: Recycle | None = None,
    ):
        self.options = options
        self.env = dict(env or {})
        self.hides = hides
        self.recycle = recycle or Recycle()
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
                worker.cells += 1
                if self.recycle.due(worker.cells, payload[0].peak_rss_mb):
                    self.close()  # the next cell starts a fresh process
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
    recycle: Recycle | None = None,
) -> Iterable[CellResult]:
    """Run ``jobs`` in one worker (one at a time, fresh ones as ``recycle`` says); yield each
    result as it arrives, in job order."""
    pool = WorkerPool(options, jobs=1, on_start=on_start, recycle=recycle)
    yield from pool.run([Group(list(jobs), dict(env or {}), hides)])
