"""Handing freed memory back to the system between cells (and between test modules).

Why: a cell's arrays are freed when it ends, but glibc's allocator keeps most of what it freed
in its heaps for reuse, so a long-lived worker's resident memory stays near the largest it has
ever held and grows with the cells it ran (measured: a pytest worker after resnet18's
resynchronised cells kept 2.8 GB resident of which 0.8 GB was live). ``malloc_trim`` returns
the free pages; it costs some 25 ms a call here, and nothing where glibc is not the allocator
(then it is not called at all).

Much of a finished cell is not freed at all until Python's cycle collector runs: trainers,
Keras models and traced functions refer to themselves, and the collector is triggered by
counts of container objects, not by bytes, so a few cyclic objects holding a deep model's
arrays wait for it for many cells (measured: resnet18's resynchronised tests left 4.7 GB
resident, 2.7 GB after a collection). A full collection costs 0.3-0.5 s in a process with
TensorFlow, torch and Keras loaded, so it runs only when resident memory has grown by
``COLLECT_AFTER_GROWTH_MB`` since the last one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import sys

#: resident growth (MB) since the last collection that makes the next release collect first
COLLECT_AFTER_GROWTH_MB = 256.0

_last_collection_mb: list[float] = []  # the resident size after the last collection, if any


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        return None


def resident_mb() -> float | None:
    """This process's resident memory now (MB); None where /proc is not there."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _collect_if_grown() -> bool:
    now = resident_mb()
    if now is None:
        return False
    if not _last_collection_mb:
        _last_collection_mb.append(now)  # the first call sets where growth is counted from
        return False
    if now - _last_collection_mb[0] <= COLLECT_AFTER_GROWTH_MB:
        return False
    gc.collect()
    return True


def release_freed_memory(*, trim: bool = True) -> bool:
    """Collects cyclic garbage if the process has grown (above), then returns the allocator's
    free memory to the system (always with ``trim``, else only after a collection). False
    where nothing was handed back."""
    collected = _collect_if_grown()
    malloc_trim = _malloc_trim()
    handed_back = malloc_trim is not None and (trim or collected)
    if handed_back:
        malloc_trim(0)
    if collected:
        _last_collection_mb[:] = [resident_mb() or 0.0]
    return handed_back
