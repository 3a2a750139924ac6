"""How many worker processes a machine can hold: cores, and memory.

One worker per core is the fastest where memory allows it, but a worker grows with the cells
it runs (a full run's largest, Keras on JAX, reached 5.2 GB before workers were recycled):
with 8 cores and 16 GB, one per core runs out of memory. The default number of workers is
therefore also bounded by the memory available now, at ``WORKER_BUDGET_MB`` each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: the memory set aside per worker for ``--jobs``'s default
WORKER_BUDGET_MB = 4096


def available_memory_mb() -> float | None:
    """Memory available to new processes without swapping (Linux's ``MemAvailable``, else
    the free physical pages); None where neither can be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class Capacity:
    """The default number of workers and, where memory and not cores set it, why."""

    jobs: int
    limited_by_memory: str | None = None


def default_jobs(
    cores: int | None = None,
    available_mb: float | None = None,
    budget_mb: float = WORKER_BUDGET_MB,
) -> Capacity:
    """One worker per core, but no more than the available memory holds at ``budget_mb``
    each (at least one: a machine too small for one still runs, one cell at a time)."""
    cores = max(1, cores if cores is not None else os.cpu_count() or 1)
    available_mb = available_memory_mb() if available_mb is None else available_mb
    if available_mb is None:
        return Capacity(cores)
    fits = max(1, int(available_mb // budget_mb))
    if fits >= cores:
        return Capacity(cores)
    return Capacity(
        fits,
        f"{fits} worker{'s' if fits > 1 else ''} for {cores} cores: "
        f"{available_mb / 1024:.1f} GB of memory available, {budget_mb / 1024:.0f} GB set aside "
        "per worker (--jobs sets another number)",
    )
