"""The harness's own benchmark (pytest-benchmark). Not part of the test suite: run it with

    .venv/bin/python -m pytest benchmarks -p no:cacheprovider --benchmark-json bench.json

- ``test_one_cell``: one cell with benchmarks off, ``equiv run`` against the plain script
  ``benchmarks/plain_cell.py`` (the same implementation and reference compared every step),
  both timed as whole processes; the ratio is printed and kept in the JSON (extra_info).
  ``warm``: the calibration store already holds the cell's calibration (every run after the
  first); ``cold``: ``--no-cache``, the calibration is computed; ``cold-port-reference``: the
  same against the torch port as the reference (``--reference torch.eager``).
- ``test_full_matrix``: the README's main job (``equiv run --out DIR``: every installed backend,
  both dtypes, benchmarks on) once, with its wall time per phase summed over cells (imports,
  calibration, lockstep, benchmark, extras, worker startup), the peak memory of its largest
  process and the size of everything it writes (the folder, its step records, its
  trajectories). Takes minutes: select it with ``-k full`` or skip it with ``-k 'not full'``.
- ``test_step_log_cost``: the step log's share of a cell's lockstep (a digest and a scale of
  every array of every step, ``equiv.checking.steplog``), in process, with a warm
  calibration: a small cell and resnet18 (11M parameters, the largest arrays).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CELL = ["--case", "two_layer_mlp", "--backend", "torch.eager", "--dtype", "float64"]
TIMES: dict[str, float] = {}


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def equiv_cell(out: Path, *extra: str) -> list[str]:
    """The cell as a user runs it: defaults (a worker process, one thread), benchmarks off."""
    command = [sys.executable, "-m", "equiv", "run", *CELL, "--bench-rounds", "0"]
    return command + ["--out", str(out), *extra]


@pytest.mark.parametrize(
    "variant",
    ["plain-script", "equiv-run-warm", "equiv-run-cold", "equiv-run-cold-port-reference"],
    ids=lambda v: v,
)
def test_one_cell(benchmark, variant, tmp_path):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    if variant == "plain-script":
        command = [sys.executable, str(ROOT / "benchmarks" / "plain_cell.py")]
    elif variant == "equiv-run-warm":
        run(equiv_cell(tmp_path / "prime", *cache))  # fills the store, not timed
        command = equiv_cell(tmp_path / "out", *cache)
    elif variant == "equiv-run-cold":
        command = equiv_cell(tmp_path / "out", "--no-cache")
    else:  # the torch port as the reference: its float64 run, shadows and probes
        command = equiv_cell(tmp_path / "out", "--no-cache", "--reference", "torch.eager")
    benchmark.group = "one cell, benchmarks off, whole processes"
    benchmark.pedantic(run, args=(command,), rounds=3, warmup_rounds=0, iterations=1)
    TIMES[variant] = benchmark.stats.stats.median
    if "plain-script" in TIMES and variant != "plain-script":
        ratio = TIMES[variant] / TIMES["plain-script"]
        benchmark.extra_info["ratio_to_plain_script"] = round(ratio, 3)
        print(f"\n{variant}: {ratio:.2f}x the plain script")


def test_full_matrix(benchmark, tmp_path):
    out = tmp_path / "reports"
    command = [sys.executable, "-m", "equiv", "run", "--out", str(out)]
    benchmark.group = "full default matrix"
    benchmark.pedantic(
        lambda: subprocess.run(command, cwd=ROOT, capture_output=True, timeout=3600),
        rounds=1,
        iterations=1,
    )
    doc = json.loads((out / "parity.json").read_text())
    phases: dict[str, float] = {}
    for cell in doc["cells"]:
        for phase, seconds in (cell.get("phases_s") or {}).items():
            phases[phase] = phases.get(phase, 0.0) + seconds
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    info = {
        "wall_s": round(benchmark.stats.stats.median, 1),
        "cells": doc["summary"],
        "phase_totals_s": {k: round(v, 1) for k, v in sorted(phases.items())},
        "peak_rss_mb_of_any_process": round(peak_kb / 1024),
        "parity_html_mb": round((out / "parity.html").stat().st_size / 1e6, 2),
        "parity_json_mb": round((out / "parity.json").stat().st_size / 1e6, 2),
        "output_mb": round(folder_bytes(out) / 1e6, 1),
        "steps_mb": round(folder_bytes(out / "steps") / 1e6, 1),
        "trajectories_mb": round(folder_bytes(out / "trajectories") / 1e6, 1),
        "jobs": doc["run"].get("jobs"),
        "cpu_count": os.cpu_count(),
    }
    benchmark.extra_info.update(info)
    print("\n" + json.dumps(info, indent=1))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


LOG_CELLS = {
    "transformer_block-torch.eager-float32-20steps": (
        ("transformer_block", "torch.eager", "float32"),
        20,
    ),
    "resnet18-torch.eager-float32-2steps": (("resnet18", "torch.eager", "float32"), 2),
}
#: rounds of the cell with the log on
ROUNDS = 7


@pytest.mark.parametrize("cell", list(LOG_CELLS), ids=lambda c: c)
def test_step_log_cost(benchmark, cell, tmp_path, monkeypatch):
    """The time spent in the step log, as a share of the lockstep it is part of. (A ratio of
    lockstep times, log on against off, was measured first: resnet18's 2-step lockstep is
    bimodal here, 0.55 or 1.1 s whatever the log, and drowned the log's own 0.02 s.)"""
    from equiv.checking.steplog import StepLog
    from equiv.contract.records import Cell
    from equiv.running.runner import RunOptions, run_cell

    (case, backend, dtype), steps = LOG_CELLS[cell]
    options = RunOptions(
        steps=steps,
        bench_rounds=0,
        check_reproducible=False,
        calibration_dir=str(tmp_path / "cache"),
    )
    run_cell(Cell(case, backend, dtype), options)  # the calibration, not timed
    spent = [0.0]
    add = StepLog.add

    def timed_add(self, record):
        tick = time.perf_counter()
        add(self, record)
        spent[0] += time.perf_counter() - tick

    monkeypatch.setattr(StepLog, "add", timed_add)
    shares: list[float] = []

    def one():
        spent[0] = 0.0
        result = run_cell(Cell(case, backend, dtype), options)
        assert result.status == "pass", result.reason
        # the lockstep as before its split: the port's part and the harness's (compare)
        shares.append(spent[0] / (result.phases_s["lockstep"] + result.phases_s["compare"]))

    benchmark.group = f"step log: {cell}"
    benchmark.pedantic(one, rounds=ROUNDS, iterations=1)
    share = sorted(shares)[len(shares) // 2]
    benchmark.extra_info["step_log_share_of_lockstep_median"] = round(share, 4)
    print(f"\n{cell}: the step log is {100 * share:.1f}% of the lockstep (median of {ROUNDS})")
