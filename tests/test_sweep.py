"""equiv sweep: margins over seeds, checkpoints, merging separate sweeps, exit status."""

import json
import subprocess
import sys

import numpy as np

from equiv.checking.verdict import ExplanationProof
from equiv.contract.records import Cell, CellResult
from equiv.quality.sweep import margin, merge_reports, run_sweep

TINY = {"cases": ["two_layer_mlp"], "backends": ["numpy"], "steps": 3}


def test_a_sweep_records_every_seed_and_checkpoints_after_each():
    seen = []
    report = run_sweep([0, 1], emit=lambda _: None, checkpoint=seen.append, **TINY)
    assert [r["seeds"] for r in seen] == [[0], [0, 1]]
    assert [r["complete"] for r in seen] == [False, True]
    assert len(report["rows"]) == 4  # 2 seeds x 2 dtypes
    assert report["summary"]["false_alarms"] == 0
    assert all(r["coverage"] == 1.0 and r["followed"] == 0 for r in report["rows"])
    assert all(r["duration_s"] >= 0 for r in report["rows"])
    assert report["summary"]["not_fully_compared"] == []
    assert set(report["summary"]["by_backend_dtype"]) == {"numpy float32", "numpy float64"}


def test_a_sweep_shares_its_calibrations_through_the_store(tmp_path):
    """Split sweeps (by backend) and their worker processes compute each calibration once."""
    store = tmp_path / "store"
    first = run_sweep([0], emit=lambda _: None, calibration_dir=str(store), **TINY)
    entries = sorted(p.name for p in store.glob("*.npz"))
    assert len(entries) == 2  # seed 0, both dtypes
    again = run_sweep([0], emit=lambda _: None, calibration_dir=str(store), **TINY)
    assert sorted(p.name for p in store.glob("*.npz")) == entries
    assert [r["margin"] for r in again["rows"]] == [r["margin"] for r in first["rows"]]


def test_a_sweep_leaves_out_what_no_verdict_uses(monkeypatch):
    import equiv.quality.sweep

    seen, isolations = [], []

    def run_cells(cells, options, isolate, executor="local"):
        seen.append(options)
        isolations.append(isolate)
        return []

    monkeypatch.setattr(equiv.quality.sweep, "run_cells", run_cells)
    run_sweep([3], emit=lambda _: None, **TINY)
    (options,) = seen
    assert options.seed == 3 and options.bench_rounds == 0
    assert not options.check_reproducible and not options.keep_trajectories
    # each seed in fresh worker processes by default: a resnet18 sweep run in one process grew
    # to 6 GB and was killed for memory
    assert isolations == ["backend"]
    run_sweep([3], emit=lambda _: None, isolate="none", **TINY)
    assert isolations == ["backend", "none"]


def test_the_cli_passes_isolate_on(monkeypatch, tmp_path):
    import equiv.quality.sweep
    from equiv.cli.main import main

    isolations = []

    def run_cells(cells, options, isolate, executor="local"):
        isolations.append(isolate)
        return []

    monkeypatch.setattr(equiv.quality.sweep, "run_cells", run_cells)
    common = ["sweep", "--case", "two_layer_mlp", "--backend", "numpy", "--seeds", "1"]
    main([*common, "--out", str(tmp_path / "a"), "--cache-dir", str(tmp_path / "c")])
    main([*common, "--isolate", "none", "--out", str(tmp_path / "b"), "--no-cache"])
    assert isolations == ["backend", "none"]


def test_the_summary_names_every_cell_that_did_not_compare_all_its_steps():
    from equiv.quality.sweep import summarize

    row = {"seed": 5, "case": "c", "backend": "b", "dtype": "float32", "status": "pass"}
    rows = [row | {"margin": 0.1, "coverage": 1.0, "followed": 2}, row | {"margin": 0.2}]
    rows.append(row | {"seed": 6, "margin": 0.3, "coverage": 0.7, "followed": 8})
    summary = summarize(rows)
    assert summary["not_fully_compared"] == ["seed 6 c b float32"]
    assert summary["followed_steps"] == 10


def test_an_explained_cell_is_measured_against_its_variant():
    result = CellResult(cell=Cell("c", "b", "float64"), status="explained", steps=1)
    result.max_ratio = {"loss": 1e6}
    result.explanation = ExplanationProof(
        "r", {}, True, {"loss": 1e6}, None, {"loss": 0.25}, {"loss": 0.0}, 1, None, None
    )
    assert margin(result) == 0.25
    result.status = "fail"
    assert margin(result) == 1e6


def row(seed, status, backend="numpy"):
    return {
        "seed": seed,
        "case": "two_layer_mlp",
        "backend": backend,
        "dtype": "float64",
        "status": status,
        "margin": 0.5 if status == "pass" else 3.0,
        "max_ratio": {},
        "reason": "" if status == "pass" else "planted",
    }


def test_merging_sweeps_unions_their_cells_and_lists_what_a_rerun_replaced():
    a = {"rows": [row(0, "pass")], "threads": 1}
    b = {"rows": [row(1, "pass"), row(0, "pass", backend="torch.eager")], "threads": 1}
    merged = merge_reports([a, b])
    assert merged["seeds"] == [0, 1] and len(merged["rows"]) == 3
    assert merged["replaced"] == []
    rerun = merge_reports([{"rows": [row(0, "fail")]}, a])
    assert [r["status"] for r in rerun["rows"]] == ["pass"]
    assert rerun["replaced"] == [
        {
            "seed": 0,
            "case": "two_layer_mlp",
            "backend": "numpy",
            "dtype": "float64",
            "was": "fail",
            "now": "pass",
        }
    ]


def equiv(*args):
    return subprocess.run(
        [sys.executable, "-m", "equiv", "sweep", *args], capture_output=True, text=True
    )


def test_cli_merges_reports_and_exits_1_on_a_false_alarm(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"rows": [row(0, "pass")]}))
    bad.write_text(json.dumps({"rows": [row(1, "fail")]}))
    ok = equiv("--from", str(good), "--out", str(tmp_path / "ok"))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ok" / "sweep-margins.svg").read_text().lstrip().startswith("<")
    alarm = equiv("--from", str(good), "--from", str(bad), "--out", str(tmp_path / "alarm"))
    assert alarm.returncode == 1
    assert "false alarm: seed 1 two_layer_mlp-numpy-float64: fail: planted" in alarm.stdout


def test_cli_names_a_source_that_was_cut_off(tmp_path):
    """A sweep's checkpoint says ``complete: false`` until its last seed: a merge of one must
    not read as the whole sweep."""
    whole, cut = tmp_path / "whole.json", tmp_path / "cut.json"
    whole.write_text(json.dumps({"rows": [row(0, "pass")], "complete": True, "seeds": [0]}))
    cut.write_text(json.dumps({"rows": [row(1, "pass")], "complete": False, "seeds": [1]}))
    result = equiv("--from", str(whole), "--from", str(cut), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert f"incomplete sweep (cut off): {cut}: only seeds 1 ran" in result.stdout
    assert str(whole) not in result.stdout
    assert json.loads((tmp_path / "o" / "sweep.json").read_text())["complete"] is False


def test_cli_unreadable_source_is_one_line_and_exit_2(tmp_path):
    result = equiv("--from", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot merge" in result.stderr


def test_the_margin_plot_keeps_every_cell_on_its_axis():
    from equiv.quality.sweep import log_margins, margin_plot

    counts, _ = np.histogram(log_margins([0.0, 0.3, 1e6]), bins=np.linspace(-4, 1, 41))
    assert counts.sum() == 3 and counts[0] == 1 and counts[-1] == 1
    svg = margin_plot([{**row(0, "fail"), "margin": 1e6}, {**row(1, "pass"), "margin": 0.0}])
    assert "2 cells, max 1000000.00" in svg
