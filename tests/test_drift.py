"""equiv diff: two runs' cells paired and labelled, on planted "new versions" of a port.

A planted upgrade is a port's source changed as a framework release could change it: a
summation order (a matmul split into two halves and added) must come out as rounding drift,
a changed default (Adam's epsilon) beyond the tolerance as a regression; the unchanged port,
run twice, as bitwise identical.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from equiv.backends.implementations import ImplSource, Patch
from equiv.checking.steplog import StepLog, digest
from equiv.cli.main import main
from equiv.contract.records import Cell, StepRecord
from equiv.drift.labels import DRIFT, IDENTICAL, REGRESSION
from equiv.running.matrix import run_one
from equiv.running.output import write_outputs
from equiv.running.runner import RunOptions

MLP = Cell("two_layer_mlp", "torch.eager", "float64")
ADAM = Cell("keras_sequential_adam", "torch.eager", "float32")
#: torch's x.mm(w1) as two half sums: the same products, added in another order
SPLIT_MATMUL = Patch("x.mm(w1)", "(x[:, :500].mm(w1[:500]) + x[:, 500:].mm(w1[500:]))")
#: a release that changes Adam's default epsilon (Keras's 1e-7 for torch's 1e-8)
ADAM_EPSILON = Patch('eps=cfg.get("epsilon", 1e-8)', "eps=1e-7")
OPTIONS = RunOptions(steps=20, bench_rounds=0, check_reproducible=False)


def _run(out: Path, planted: dict[Cell, tuple[str, Patch]] | None = None) -> Path:
    results = []
    for cell, module in ((MLP, "cases.two_layer_mlp.torch_impl"), (ADAM, None)):
        module = module or "cases.keras_sequential.torch_impl"
        patches = (planted or {}).get(cell, ())
        results.append(run_one(cell, OPTIONS, ImplSource(module, patches)))
    write_outputs(out, results, OPTIONS)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("drift")
    return {
        "old": _run(root / "old"),
        "again": _run(root / "again"),
        "new": _run(root / "new", {MLP: (SPLIT_MATMUL,), ADAM: (ADAM_EPSILON,)}),
    }


def _labels(document: dict) -> dict[str, dict]:
    return {c["id"]: c for c in document["cells"]}


def test_an_unchanged_port_run_twice_is_bitwise_identical(runs, tmp_path, capsys):
    assert (
        main(["diff", str(runs["old"]), str(runs["again"]), "--json", str(tmp_path / "d.json")])
        == 0
    )
    cells = _labels(json.loads((tmp_path / "d.json").read_text()))
    assert {c["label"] for c in cells.values()} == {IDENTICAL}
    assert "2 cells: 2 identical" in capsys.readouterr().out


def test_planted_upgrades_summation_order_is_drift_and_a_changed_default_a_regression(
    runs, tmp_path, capsys
):
    code = main(["diff", str(runs["old"]), str(runs["new"]), "--out", str(tmp_path)])
    assert code == 1  # a regression
    cells = _labels(json.loads((tmp_path / "diff.json").read_text()))
    mlp, adam = cells[MLP.id], cells[ADAM.id]
    assert mlp["label"] == DRIFT, mlp
    assert (mlp["old"]["status"], mlp["new"]["status"]) == ("pass", "pass")
    drift = mlp["drift"]
    assert drift["from"] == "step records"
    # the change starts where it was planted: step 0's first quantity computed from x.mm(w1)
    assert drift["first_changed"]["step"] == 0
    assert 0 < drift["tolerance_fraction"] < 1 and drift["ulps"] > 0
    assert adam["label"] == REGRESSION, adam
    assert (adam["old"]["status"], adam["new"]["status"]) == ("pass", "fail")
    out = capsys.readouterr().out
    assert f"regression          {ADAM.id}: pass in OLD, fail in NEW" in out
    html = (tmp_path / "diff.html").read_text()
    assert html.count("<svg") == 2 and "regression" in html and MLP.id in html


def test_the_reverse_diff_calls_the_regression_fixed(runs, tmp_path):
    assert (
        main(["diff", str(runs["new"]), str(runs["old"]), "--json", str(tmp_path / "d.json")]) == 0
    )
    cells = _labels(json.loads((tmp_path / "d.json").read_text()))
    assert cells[ADAM.id]["label"] == "fixed"
    assert cells[MLP.id]["label"] == DRIFT


def test_a_baseline_is_diffed_like_its_run(runs, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    assert main(["baseline", str(runs["old"]), "--out", str(baseline)]) == 0
    stored = json.loads(baseline.read_text())
    assert stored["schema"] == "equiv.baseline/1" and len(stored["cells"]) == 2
    assert main(["diff", str(baseline), str(runs["again"])]) == 0
    assert "2 cells: 2 identical" in capsys.readouterr().out
    assert main(["diff", str(baseline), str(runs["new"]), "--json", str(tmp_path / "d.json")]) == 1
    cells = _labels(json.loads((tmp_path / "d.json").read_text()))
    # a baseline keeps no step records: the drift's size is from the largest ratios alone
    assert cells[MLP.id]["label"] == DRIFT
    assert cells[MLP.id]["drift"]["from"] == "largest ratios"


def test_a_run_cut_off_is_compared_on_the_cells_it_has(runs, tmp_path, capsys):
    document = json.loads((runs["again"] / "parity.json").read_text())
    document["cells"] = [c for c in document["cells"] if c["id"] == MLP.id]
    document["incomplete"] = {"reason": "interrupted by SIGTERM after 1 of 2 cells"}
    (tmp_path / "parity.json").write_text(json.dumps(document))
    assert main(["diff", str(runs["old"]), str(tmp_path), "--json", str(tmp_path / "d.json")]) == 0
    cells = _labels(json.loads((tmp_path / "d.json").read_text()))
    assert cells[MLP.id]["label"] == IDENTICAL
    assert cells[ADAM.id]["label"] == "missing"
    assert "cut off" in cells[ADAM.id]["why"]
    assert "NEW is a run that was cut off" in capsys.readouterr().out


def test_pairs_run_differently_are_not_comparable_and_say_why(runs, tmp_path):
    document = json.loads((runs["again"] / "parity.json").read_text())
    for cell in document["cells"]:
        if cell["id"] == MLP.id:
            cell["steps"] = 30
        else:
            cell["resynchronised_from"] = 12
    (tmp_path / "parity.json").write_text(json.dumps(document))
    main(["diff", str(runs["old"]), str(tmp_path), "--json", str(tmp_path / "d.json")])
    cells = _labels(json.loads((tmp_path / "d.json").read_text()))
    assert cells[MLP.id]["label"] == "not comparable"
    assert cells[MLP.id]["why"] == "20 steps in OLD, 30 in NEW"
    assert cells[ADAM.id]["why"] == "free-running in OLD, resynchronised from step 12 in NEW"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "nowhere", "no such file or folder"),
        (lambda d: d, "no parity.json in this folder"),
        (lambda d: _write(d / "parity.json", "{not json"), "is not valid JSON"),
        (
            lambda d: _write(d / "parity.json", '{"schema": "equiv.parity/2", "cel'),
            "not valid JSON",
        ),
        (lambda d: _write(d / "parity.json", '{"schema": "other/1"}'), "not an equiv parity file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys, make, message):
    bad = make(tmp_path)
    assert main(["diff", str(runs["old"]), str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_documents_of_incompatible_schema_versions_are_refused(runs, tmp_path, capsys):
    document = json.loads((runs["old"] / "parity.json").read_text())
    document["schema"] = "equiv.parity/1"
    _write(tmp_path / "parity.json", json.dumps(document))
    assert main(["diff", str(tmp_path), str(runs["new"])]) == 2
    err = capsys.readouterr().err
    assert "incompatible schema versions" in err and len(err.strip().splitlines()) == 1


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path.parent


def test_digests_tell_dtype_shape_and_bits_apart():
    a = np.arange(6, dtype=np.float64)
    assert digest(a) == digest(a.copy())
    assert digest(a) != digest(a.astype(np.float32))
    assert digest(a) != digest(a.reshape(2, 3))
    b = a.copy()
    b[3] = np.nextafter(b[3], np.inf)  # one ulp
    assert digest(a) != digest(b)
    assert digest(1.5) == digest(np.float64(1.5))


def test_the_step_log_keeps_every_step_and_quantity():
    log = StepLog()
    for t in range(3):
        log.add(StepRecord(loss=float(t), grads={"w": np.full(2, t)}, params={"w": np.ones(2)}))
    assert log.keys == ["loss", "grads/w", "params/w"]
    d = log.digests()
    assert d.shape == (3, 3) and len(set(d[:, 0])) == 3 and len(set(d[:, 2])) == 1
    assert log.cell_digest() != StepLog().cell_digest()


STORED = Path(__file__).parent / "fixtures" / "drift"


def test_two_stored_runs_of_real_jax_releases_are_labelled_as_measured(tmp_path):
    """jax/jaxlib 0.9.2 and 0.10.2, the same cells (tests/fixtures/drift/README.md): the dense
    MLP's steps and the LSTM's float64 ones are bitwise the same; the transformer's and the
    LSTM's float32 ones moved within tolerance (docs/upgrades.md has the whole runs)."""
    old, new = STORED / "jax-0.9.2", STORED / "jax-0.10.2"
    assert main(["diff", str(old), str(new), "--out", str(tmp_path)]) == 0
    diff = json.loads((tmp_path / "diff.json").read_text())
    assert diff["versions_changed"]["jax"] == {"old": "0.9.2", "new": "0.10.2"}
    labels = {c["id"]: c["label"] for c in diff["cells"]}
    for cell_id, label in labels.items():
        case, dtype = cell_id.split("-")[0], cell_id.rsplit("-", 1)[1]
        moved = case == "transformer_block" or (case == "lstm_regressor" and dtype == "float32")
        assert label == (DRIFT if moved else IDENTICAL), cell_id
    for cell in diff["cells"]:
        if cell["label"] == DRIFT:
            size = cell["drift"]
            assert size["from"] == "step records" and 0 < size["tolerance_fraction"] < 0.5
            assert size["first_changed"]["step"] == 0


def test_arrays_are_kept_for_the_failing_cell_at_its_first_divergence(runs):
    """Only the failing cell writes arrays: the port's and the reference's at the step where it
    first diverged, where the diverging quantity is out of tolerance."""
    document = json.loads((runs["new"] / "parity.json").read_text())
    div = _labels(document)[ADAM.id]["first_divergence"]
    folder = runs["new"] / "trajectories"
    assert [p.name for p in folder.iterdir()] == [f"{ADAM.case}__{ADAM.backend}__{ADAM.dtype}.npz"]
    with np.load(folder / f"{ADAM.case}__{ADAM.backend}__{ADAM.dtype}.npz") as z:
        assert int(z["divergence/step"]) == div["step"]
        key = f"{div['quantity']}/{div['name']}"
        got, want = z[f"divergence/implementation/{key}"], z[f"divergence/reference/{key}"]
        assert np.abs(got.astype(np.float64) - want).max() == pytest.approx(div["error"])
        assert {"data/x", "losses", "divergence/implementation/loss"} <= set(z.files)


@pytest.mark.parametrize(
    "into, message",
    [
        ('{"schema": "equiv.baseline/1", "cells": {}}', "malformed baseline"),
        ('{"schema": "equiv.baseline/1", "cel', "not valid JSON"),
        ('{"schema": "equiv.parity/2", "cells": []}', "is not an equiv baseline"),
    ],
)
def test_baseline_into_a_bad_file_is_one_line_and_exit_2(runs, tmp_path, capsys, into, message):
    target = tmp_path / "baseline.json"
    target.write_text(into)
    assert main(["baseline", str(runs["old"]), "--into", str(target)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert target.read_text() == into  # untouched


def test_digests_of_different_algorithms_are_not_compared(tmp_path, capsys):
    """The stored runs' digests were SHA-1's (a run that records no algorithm); the same
    document saying XXH3 must not come out bitwise identical to itself: its digests tell
    nothing about the other's, so the cells are sized by their errors (unchanged here)."""
    side = STORED / "jax-0.10.2"
    shutil.copytree(side, tmp_path / "new")
    document = json.loads((side / "parity.json").read_text())
    document["run"]["digest"] = "xxh3_64"
    (tmp_path / "new" / "parity.json").write_text(json.dumps(document))
    assert main(["diff", str(side), str(tmp_path / "new"), "--json", str(tmp_path / "d.json")]) == 0
    labels = {c["label"] for c in json.loads((tmp_path / "d.json").read_text())["cells"]}
    assert labels == {"unchanged"}
    assert "digests were made by different algorithms" in capsys.readouterr().out


def test_a_declaration_in_memory_and_read_from_json_is_the_same_explanation():
    """The test suite labels a cell still in memory (tuples) against a stored baseline (JSON
    lists): the same declared variant must not read as a changed explanation."""
    from equiv.drift.labels import explanation_of

    def cell(variant):
        return {"status": "explained", "explanation": {"reason": "r", "variant": variant}}

    in_memory = explanation_of(cell({"frozen": ("lstm.bias_hh",), "compute_dtype": "float32"}))
    stored = explanation_of(cell({"compute_dtype": "float32", "frozen": ["lstm.bias_hh"]}))
    assert in_memory == stored
    assert in_memory != explanation_of(cell({"frozen": ["lstm.bias_ih"]}))


def test_baseline_of_a_missing_or_empty_run_folder_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for run, words in ((tmp_path / "nowhere", "no such file"), (tmp_path / "empty", "no parity")):
        assert main(["baseline", str(run), "--out", str(tmp_path / "b.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "b.json").exists()
