"""Freed memory goes back to the system between cells and between test modules
(``equiv.running.memory``): without it a worker's resident memory stays near its peak."""

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)"
)

# In a fresh interpreter: the allocator set up as a long-lived worker's ends up (1 MB blocks
# from the heap, as after a large block was freed; nothing handed back by free itself), 400 MB
# freed but one block, then released.
SCRIPT = textwrap.dedent(
    """
    import ctypes
    import numpy as np
    from equiv.running.memory import release_freed_memory

    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 64 * 2**20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD
    held = [np.ones(2**20 // 8) for _ in range(400)]
    last = held[-1]
    del held
    before = rss_mb()
    released = release_freed_memory()
    print(released, before, rss_mb())
    """
)


def test_freed_heap_memory_is_handed_back():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stdout.split()
    released, before, after = out[0] == "True", float(out[1]), float(out[2])
    assert released
    assert before - after > 300, (before, after)  # of the 399 MB freed


def test_the_pytest_plugin_releases_between_test_modules(monkeypatch):
    from pathlib import Path
    from types import SimpleNamespace

    from equiv.cli import pytest_plugin
    from equiv.running import memory

    calls = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: calls.append(1) or True)
    a1, a2 = SimpleNamespace(path=Path("test_a.py")), SimpleNamespace(path=Path("test_a.py"))
    b = SimpleNamespace(path=Path("test_b.py"))
    pytest_plugin.pytest_runtest_teardown(a1, a2)
    assert calls == []  # within a module: nothing
    pytest_plugin.pytest_runtest_teardown(a2, b)
    pytest_plugin.pytest_runtest_teardown(b, None)
    assert calls == [1, 1]


def test_the_workers_release_after_each_cell():
    """Local and Ray workers call it after every cell (inside their processes, where a test
    cannot count the calls)."""
    import inspect

    from equiv.running import ray_executor, workers

    assert "release_freed_memory()" in inspect.getsource(workers._worker_main)
    assert "release_freed_memory()" in inspect.getsource(ray_executor._cell_task)
