"""--jobs and pytest's -n auto by default respect the available memory, not only the cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from equiv.running import capacity
from equiv.running.capacity import WORKER_BUDGET_MB, available_memory_mb, default_jobs


def test_one_worker_per_core_where_memory_allows():
    assert default_jobs(cores=8, available_mb=64 * 1024).jobs == 8
    assert default_jobs(cores=8, available_mb=64 * 1024).limited_by_memory is None


def test_memory_bounds_the_workers_and_says_why():
    got = default_jobs(cores=8, available_mb=16 * 1024)
    assert got.jobs == int(16 * 1024 // WORKER_BUDGET_MB) < 8
    assert "16.0 GB of memory available" in got.limited_by_memory
    assert "--jobs" in got.limited_by_memory


def test_a_machine_too_small_for_one_worker_still_runs_one():
    assert default_jobs(cores=4, available_mb=512).jobs == 1


def test_unknown_memory_falls_back_to_the_cores(monkeypatch):
    monkeypatch.setattr(capacity, "available_memory_mb", lambda: None)
    assert default_jobs(cores=3) == capacity.Capacity(3)


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="reads Linux's /proc/meminfo")
def test_this_machine_reports_its_available_memory():
    mb = available_memory_mb()
    total_mb = int(Path("/proc/meminfo").read_text().split()[1]) / 1024  # MemTotal, first
    assert mb is not None and 0 < mb <= total_mb


def test_equiv_run_takes_its_default_jobs_from_the_capacity(monkeypatch, tmp_path, capsys):
    """The run's recorded jobs are the capacity's, and the reason is printed once."""
    import json

    from equiv.cli.main import main

    monkeypatch.setattr(capacity, "available_memory_mb", lambda: 1.5 * WORKER_BUDGET_MB)
    monkeypatch.setattr(capacity.os, "cpu_count", lambda: 6)
    out = tmp_path / "out"
    args = ["run", "--case", "two_layer_mlp", "--backend", "numpy", "--dtype", "float64"]
    code = main([*args, "--steps", "2", "--bench-rounds", "0", "--out", str(out)])
    assert code == 0
    assert "1 worker for 6 cores" in capsys.readouterr().err
    assert json.loads((out / "parity.json").read_text())["run"]["jobs"] == 1


@pytest.mark.parametrize("variable", ["", "3"])
def test_pytest_n_auto_asks_equiv_unless_the_user_set_xdists_variable(monkeypatch, variable):
    from equiv.cli.pytest_plugin import pytest_xdist_auto_num_workers

    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", variable)
    monkeypatch.setattr(capacity, "available_memory_mb", lambda: 2.5 * WORKER_BUDGET_MB)
    monkeypatch.setattr(capacity.os, "cpu_count", lambda: 16)
    assert pytest_xdist_auto_num_workers(None) == (None if variable else 2)
