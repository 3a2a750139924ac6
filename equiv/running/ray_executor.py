"""Running cells as Ray tasks, on a local Ray cluster or across the machines of a real one.

Each cell is one task that carries its own environment (``runtime_env``'s ``env_vars``: the
backend's ``worker_env`` and the modules it hides). Ray keeps a pool of worker processes per
distinct environment, so Keras's backend, fixed once per process, is never shared between
cells that need different ones, as with the local workers (``equiv.running.workers``).

What the local workers guarantee holds here:
- isolation: a cell that raises is an ``error`` cell with its reason; a process or node that
  dies loses only the cells it was running. Those are submitted once more (``RETRIES``) and,
  lost again, reported as ``error``. Ray's own retries are off: equiv counts the retry in
  the cell's record (``CellResult.retries``) and says why in its warnings.
- timeout: a cell that runs past ``RunOptions.timeout_s`` is cancelled (its process killed)
  and becomes ``timeout``. At most as many cells run as the cluster has CPUs for them
  (``threads`` each), so a cell's clock starts when it is submitted: it does not wait in
  Ray's queue.
- journal and ``--resume``: results come back one by one to the caller, which journals them
  (``equiv run``) or checkpoints them (``equiv sweep``) as with local workers.

Not the same: a benchmark cannot pause the rest of a cluster as the local pool pauses its
other workers, so on Ray a cell's benchmark runs beside other cells (each with its own CPUs).
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from equiv.backends.implementations import ImplSource
from equiv.contract.records import Cell, CellResult
from equiv.running.memory import release_freed_memory
from equiv.running.runner import RunOptions, run_cell
from equiv.running.workers import failure, hide_modules

T = TypeVar("T")

#: times a cell whose process or node was lost is submitted again before it is an ``error``
RETRIES = 1
#: the longest the driver waits in Ray's ``wait`` at a time (see run_on_ray)
WAIT_SLICE_S = 1.0
#: seconds to wait for a cluster's address to answer before giving up
CONNECT_TIMEOUT_S = 5.0
#: the modules a task's process hides (``Backend.worker_hides``), comma-separated, in the
#: task's environment: the task reads them there, and Ray's pools of worker processes, one
#: per environment, keep cells that hide different modules apart
HIDES_VARIABLE = "EQUIV_WORKER_HIDES"


class ExecutorError(RuntimeError):
    """Ray cannot run the cells: not installed, or no cluster answers (a one-line message)."""


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` (``auto``: the one ``ray start`` left on this
    machine), else at ``$RAY_ADDRESS``, else start a new local one. Not ``ray.init``'s own
    default, which tries the cluster last started here first: one that has since died
    (its record left behind) made it wait for minutes.

    An address is first tried with a plain TCP connection: ``ray.init`` waits minutes on an
    address where nothing answers."""
    # Ray's C++ failure signal handler (absl's) would take SIGTERM from equiv's own, which
    # writes the partial document of a run cut off (seen: exit 15, nothing written); read by
    # Ray when it is imported
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    try:
        import ray
    except ImportError:
        raise ExecutorError(
            "--executor ray needs Ray, which is not installed (pip install 'equiv[ray]')"
        ) from None
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address and address not in ("auto", "local"):
        _check_answers(address)
    try:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    except Exception as exc:  # ray raises ConnectionError, RuntimeError, ValueError...
        where = "" if address == "local" else f" at {address}"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExecutorError(f"cannot join the Ray cluster{where}: {message}") from None


def _check_answers(address: str) -> None:
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ExecutorError(f"Ray address {address!r} is not host:port (or ray://host:port)")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ExecutorError(f"no Ray cluster answers at {address}: {exc.strerror or exc}") from None


def _cell_task(cell: Cell, impl: ImplSource | None, options: RunOptions) -> CellResult:
    """One cell, in a Ray worker process whose environment the task's ``runtime_env`` set."""
    hide_modules(filter(None, os.environ.get(HIDES_VARIABLE, "").split(",")))
    try:
        return run_cell(cell, options, impl=impl)
    finally:
        release_freed_memory()  # Ray reuses the process for the environment's next cell


@dataclass(eq=False)
class _Task:
    cell: Cell
    impl: ImplSource | None
    env: dict[str, str]
    hides: tuple[str, ...]
    #: why each earlier attempt was lost
    lost: list[str] = field(default_factory=list)


def cluster_slots(threads: int) -> int:
    """Cells that can run at once: the cluster's CPUs, ``threads`` per cell."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return max(1, int(cpus // max(1, threads)))


def run_on_ray(
    jobs: Iterable[tuple[Cell, ImplSource | None, dict[str, str], tuple[str, ...]]],
    options: RunOptions,
    on_start: Callable[[Cell], None] | None = None,
    max_cells: int | None = None,
) -> Iterator[CellResult]:
    """Yield each cell's result as it arrives. ``jobs``: (cell, implementation, environment,
    hidden modules), in the order to submit them. ``max_cells``: cells a Ray worker process
    runs before Ray replaces it (``Recycle.max_cells``; None: no limit)."""
    import ray
    from ray.exceptions import RayError, RayTaskError

    threads = max(1, options.threads or 1)
    remote = ray.remote(max_calls=max_cells or 0)(_cell_task)
    pending = deque(_Task(cell, impl, dict(env), tuple(hides)) for cell, impl, env, hides in jobs)
    running: dict[object, tuple[_Task, float]] = {}
    slots = cluster_slots(threads)

    def submit(task: _Task) -> None:
        env = {**task.env, HIDES_VARIABLE: ",".join(task.hides)}
        ref = remote.options(
            name=task.cell.id,
            num_cpus=threads,
            max_retries=0,
            runtime_env={"env_vars": env},
        ).remote(task.cell, task.impl, options)
        running[ref] = (task, time.monotonic())
        if on_start is not None:
            on_start(task.cell)

    def failed(task: _Task, status: str, reason: str) -> CellResult:
        return _with_retries(failure(options, task.cell, status, reason), task)

    try:
        while pending or running:
            while pending and len(running) < slots:
                submit(pending.popleft())
            now = time.monotonic()
            deadline = min(started + options.timeout_s for _, started in running.values())
            # in slices: a signal's Python handler (equiv run's SIGTERM) runs only between
            # them, as Ray's wait does not always return for it (seen joined to a cluster)
            wait_s = min(WAIT_SLICE_S, max(0.0, deadline - now))
            ready, _ = _unmasked(ray.wait, list(running), num_returns=1, timeout=wait_s)
            for ref in ready:
                task, _ = running.pop(ref)
                try:
                    result = _unmasked(ray.get, ref)
                except RayTaskError as exc:  # raised outside run_cell's own handling
                    cause = exc.cause if exc.cause is not None else exc
                    yield failed(task, "error", f"{type(cause).__name__}: {cause}"[:500])
                    continue
                except RayError as exc:  # the process or node running it was lost
                    why = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
                    task.lost.append(why)
                    if len(task.lost) <= RETRIES:
                        pending.appendleft(task)
                    else:
                        yield failed(
                            task, "error", f"lost its Ray worker {len(task.lost)} times: {why}"
                        )
                    continue
                yield _with_retries(result, task)
            now = time.monotonic()
            for ref, (task, started) in list(running.items()):
                if now - started > options.timeout_s:
                    ray.cancel(ref, force=True)
                    del running[ref]
                    limit = options.timeout_s
                    yield failed(
                        task, "timeout", f"no result within {limit:g} s; its Ray task was killed"
                    )
    finally:
        for ref in running:
            ray.cancel(ref, force=True)


def _unmasked(call: Callable[..., T], *args, **kwargs) -> T:
    """``call`` (Ray's ``wait`` or ``get``), re-raising what a signal handler raised while it
    waited: Ray's Cython code checks for signals and reports a handler's exception as a
    ``SystemError`` caused by it, which would turn equiv's own interruption (a
    ``BaseException``, as ``KeyboardInterrupt``) into a crash."""
    try:
        return call(*args, **kwargs)
    except SystemError as exc:
        cause = exc.__cause__ or exc.__context__
        if cause is not None and not isinstance(cause, Exception):
            raise cause from None
        raise


def _with_retries(result: CellResult, task: _Task) -> CellResult:
    """``result`` with the attempts that were lost and submitted again (a last lost attempt,
    past ``RETRIES``, is the result's own reason, not a retry)."""
    resubmitted = task.lost[:RETRIES]
    result.retries = len(resubmitted)
    for attempt, why in enumerate(resubmitted, 1):
        result.warnings.append(f"attempt {attempt} lost its Ray worker ({why}); submitted again")
    return result
