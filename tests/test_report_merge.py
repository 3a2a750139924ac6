"""`equiv report` and `equiv report merge`: conflicts are kept, never overwritten; bad input
is one line and exit 2, with nothing written."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from equiv.cli.main import main
from equiv.contract.records import Cell, CellResult
from equiv.report.merge import merge_documents
from equiv.report.plotdata import unpack
from equiv.results.document import build_document, load_document


def doc(*cells: tuple[str, str, str, str, float | None], command: str = "equiv run") -> dict:
    """A small document: (case, backend, dtype, status, max loss error) per cell."""
    results = []
    for case, backend, dtype, status, error in cells:
        r = CellResult(cell=Cell(case, backend, dtype), status=status, steps=3)
        if error is not None:
            r.max_error = {"loss": error}
            r.max_ratio = {"loss": error * 10}
            r.compared_steps = 3
            r.series = {"step": [0, 1, 2], "loss": {"error": [error] * 3, "tolerance": [0.1] * 3}}
        if status == "skip":
            r.reason = "tensorflow is not installed"
        results.append(r)
    return build_document(results, {"command": command, "seed": 0}, {"seed": 0, "steps": 3})


A = doc(
    ("mlp", "numpy", "float64", "pass", 0.0),
    ("mlp", "torch.eager", "float64", "pass", 0.01),
    ("mlp", "tf.eager", "float64", "skip", None),
    ("branch", "torch.eager", "float64", "pass", 0.02),
    command="job a",
)
B = doc(
    ("mlp", "numpy", "float64", "pass", 0.0),  # identical: merges quietly
    ("mlp", "torch.eager", "float64", "fail", 3.0),  # conflict: status differs
    ("mlp", "tf.eager", "float64", "pass", 0.03),  # ran where A skipped
    ("branch", "torch.eager", "float64", "pass", 0.05),  # conflict: max_error differs
    ("branch", "jax.jit", "float64", "pass", 0.04),  # only in B
    command="job b",
)


def cell(document: dict, cid: str) -> dict:
    return next(c for c in document["cells"] if c["id"] == cid)


def test_merge_keeps_conflicts_and_merges_duplicates():
    merged = merge_documents([("a.json", A), ("b.json", B)])
    assert len(merged["cells"]) == 5
    same = cell(merged, "mlp-numpy-float64")
    assert same["sources"] == ["a.json", "b.json"] and "conflicts" not in same

    status = cell(merged, "mlp-torch.eager-float64")
    assert status["status"] == "fail" and status["source"] == "b.json"  # the worse one stands
    assert [(c["status"], c["source"]) for c in status["conflicts"]] == [("pass", "a.json")]

    errors = cell(merged, "branch-torch.eager-float64")
    both = [errors["max_error"]["loss"]] + [c["max_error"]["loss"] for c in errors["conflicts"]]
    assert sorted(both) == [0.02, 0.05]

    ran = cell(merged, "mlp-tf.eager-float64")
    assert ran["status"] == "pass" and "conflicts" not in ran
    assert ran["superseded"] == [
        {"source": "a.json", "status": "skip", "reason": "tensorflow is not installed"}
    ]
    assert merged["summary"]["conflict"] == 2
    assert merged["summary"]["total"] == 5 and merged["summary"]["fail"] == 1
    assert [s["file"] for s in merged["sources"]] == ["a.json", "b.json"]
    assert merged["sources"][1]["environment"]["command"] == "job b"


def test_merging_a_merge_keeps_every_result():
    first = merge_documents([("a.json", A), ("b.json", B)])
    again = merge_documents([("ab.json", first), ("a2.json", copy.deepcopy(A))])
    status = cell(again, "mlp-torch.eager-float64")
    results = [status] + status["conflicts"]
    assert sorted(r["status"] for r in results) == ["fail", "pass"]
    passing = next(r for r in results if r["status"] == "pass")
    assert set(passing["sources"]) == {"a.json", "a2.json"}
    assert [s["file"] for s in again["sources"]] == ["a.json", "b.json", "a2.json"]


def write(tmp_path: Path, name: str, document: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_merge_command_writes_json_and_html(tmp_path, capsys):
    a, b = write(tmp_path, "a.json", A), write(tmp_path, "b.json", B)
    out = tmp_path / "merged"
    assert main(["report", "merge", str(a), str(b), "--out", str(out)]) == 0
    merged = load_document(out / "parity.json")
    assert merged["summary"]["conflict"] == 2
    html = (out / "parity.html").read_text()
    # the matrix square and the details' header both carry the marker with both verdicts
    assert html.count('<span class="conflict-mark">⚠ conflict: fail vs pass</span>') == 2
    assert (
        'class="cell s-fail conflict" data-status="fail" data-cell="mlp-torch.eager-float64"'
        in html
    )
    assert f"Result 2 from <code>{a}</code>" in html  # the other result, listed whole
    assert "⚠ conflict: pass vs pass" in html  # same status, different errors
    assert "2 cells have conflicting results" in html
    ids = re.findall(r'\bid="([^"]+)"', html)  # both results' plots, in one page
    assert len(ids) == len(set(ids))
    data = unpack(re.search(r'id="equiv-plot-data">([^<]*)</script>', html).group(1))
    hosts = re.findall(r'data-plot="(\w+)" data-plot-for="([^"]+)"', html)
    assert ("errors", "cell-mlp-torch.eager-float64-conflict1") in hosts
    assert all(kind in data[anchor] for kind, anchor in hosts)
    assert "2 conflict" in capsys.readouterr().out


def test_report_command_rerenders_and_copies(tmp_path):
    source = write(tmp_path, "run.json", A)
    out = tmp_path / "out"
    assert main(["report", str(source), "--out", str(out)]) == 0
    assert (out / "parity.json").read_bytes() == source.read_bytes()
    assert 'data-cell="mlp-numpy-float64"' in (out / "parity.html").read_text()
    # in place (the default --out is the JSON's folder): no copy onto itself
    assert main(["report", str(out / "parity.json")]) == 0
    assert (out / "parity.json").read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON"),
        ('{"schema": "something/else", "cells": []}', "is not an equiv parity file"),
        ("[1, 2, 3]", "is not an equiv parity file"),
        ('{"schema": "equiv.parity/1", "cells": [{"case": "x"}]}', "must be a list of cells"),
        (b"\xff\xfe\x00garbage", "is not valid JSON"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content.encode() if isinstance(content, str) else content)
    good = write(tmp_path, "good.json", A)
    for argv in (
        ["report", str(bad), "--out", str(tmp_path / "o1")],
        ["report", "merge", str(good), str(bad), "--out", str(tmp_path / "o2")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and err[0].startswith("equiv report: error:")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "missing.json"], "cannot read missing.json"),
        (["report", "."], "cannot read"),
        (["report", "merge", "--out", "x"], "merge needs at least one PARITY.json"),
        (["report", "merge", "a.json"], "merge needs --out DIR"),
        (["report", "a.json", "b.json"], "give one PARITY.json"),
    ],
)
def test_usage_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_corrupt_json_from_the_shell_has_no_traceback(tmp_path):
    bad = tmp_path / "parity.json"
    bad.write_text('{"schema": "equiv.parity/1", "cells": [')
    out = subprocess.run(
        [sys.executable, "-m", "equiv", "report", str(bad), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "o").exists()
