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


def test_the_pytest_plugin_trims_between_test_modules(monkeypatch):
    from pathlib import Path
    from types import SimpleNamespace

    from equiv.cli import pytest_plugin
    from equiv.running import memory

    calls = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda trim: calls.append(trim) or True)
    a1, a2 = SimpleNamespace(path=Path("test_a.py")), SimpleNamespace(path=Path("test_a.py"))
    b = SimpleNamespace(path=Path("test_b.py"))
    pytest_plugin.pytest_runtest_teardown(a1, a2)
    pytest_plugin.pytest_runtest_teardown(a2, b)
    pytest_plugin.pytest_runtest_teardown(b, None)
    # after every test (a collection if it grew the process), a trim only between modules
    assert calls == [False, True, True]


# Cyclic garbage (objects that refer to themselves, as trainers and Keras models do) holding
# 400 MB, with the cycle collector off as it effectively is between cells (it counts objects,
# not bytes): a release collects it once the process has grown past the limit.
CYCLES = textwrap.dedent(
    """
    import gc
    import numpy as np
    from equiv.running.memory import release_freed_memory, resident_mb

    gc.disable()
    release_freed_memory()  # where growth is counted from

    class Trainer:
        def __init__(self):
            self.me = self
            self.params = np.ones(2**20 // 8)

    trainers = [Trainer() for _ in range(400)]
    del trainers
    before = resident_mb()
    release_freed_memory()
    print(before, resident_mb())
    """
)


def test_cyclic_garbage_is_collected_once_the_process_has_grown():
    out = subprocess.run(
        [sys.executable, "-c", CYCLES], capture_output=True, text=True, check=True
    ).stdout.split()
    before, after = float(out[0]), float(out[1])
    assert before - after > 300, (before, after)


def test_a_release_collects_only_after_growth(monkeypatch):
    """A full collection costs 0.3-0.5 s in a worker with the frameworks loaded: not after
    every test or cell, only once resident memory grew by the limit since the last one."""
    from equiv.running import memory

    # resident sizes read one after the other; a collection reads the size after it too
    sizes = [1000.0, 1100.0, 1250.0, 1300.0, 900.0, 1000.0, 1200.0, 950.0]
    collections = []
    monkeypatch.setattr(memory, "resident_mb", lambda: sizes.pop(0) if sizes else 950.0)
    monkeypatch.setattr(memory, "_last_collection_mb", [])
    monkeypatch.setattr(memory.gc, "collect", lambda: collections.append(1))
    memory.release_freed_memory()  # 1000: where growth is counted from
    memory.release_freed_memory()  # +100
    memory.release_freed_memory()  # +250: not past 256
    assert collections == []
    memory.release_freed_memory()  # +300: collected; 900 after it
    assert collections == [1]
    memory.release_freed_memory()  # +100 from 900
    assert collections == [1]
    memory.release_freed_memory()  # +300 from 900
    assert collections == [1, 1]
    assert sizes == []


def test_the_workers_release_after_each_cell():
    """Local and Ray workers call it after every cell (inside their processes, where a test
    cannot count the calls)."""
    import inspect

    from equiv.running import ray_executor, workers

    assert "release_freed_memory()" in inspect.getsource(workers._worker_main)
    assert "release_freed_memory()" in inspect.getsource(ray_executor._cell_task)


def test_every_cell_releases_its_frameworks_caches(monkeypatch):
    """After each cell, whatever its outcome, the backend drops the caches its framework keeps
    for the process's lifetime; a release that fails is a warning, and the verdict stands."""
    from equiv.backends.numpy import NumpyBackend
    from equiv.contract.records import Cell
    from equiv.running.runner import RunOptions, run_cell

    calls = []
    monkeypatch.setattr(NumpyBackend, "release_caches", lambda self: calls.append(self.id))
    options = RunOptions.verdict_only(steps=2)
    passed = run_cell(Cell("two_layer_mlp", "numpy", "float64"), options)
    assert passed.status == "pass" and calls == ["numpy"]

    def broken(self):
        raise RuntimeError("cache gone")

    monkeypatch.setattr(NumpyBackend, "release_caches", broken)
    with pytest.warns(RuntimeWarning, match="two_layer_mlp-numpy-float64: releasing numpy"):
        again = run_cell(Cell("two_layer_mlp", "numpy", "float64"), options)
    assert again.status == "pass"
