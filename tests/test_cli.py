"""The command line: listing, a small run, and one-line errors with exit 2 for bad input."""

import json
import subprocess
import sys

import pytest


def equiv(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "equiv", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_list_shows_cases_and_backends():
    out = equiv("list", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert {b["id"] for b in doc["backends"]} >= {
        "numpy",
        "torch.eager",
        "torch.jit",
        "torch.compile",
    }
    assert len(doc["cases"]) >= 5
    declared = {(d["declared_by"], d["dtypes"]): d["variant"] for d in doc["declared_differences"]}
    assert declared[("backend keras.torch", "float64")] == {"compute_dtype": "float32"}
    assert ("case keras_sequential_adam", "*") in declared


def test_list_shows_where_each_case_comes_from():
    """Built-in cases say so; an installed case package's say which (tests/test_case_plugins.py)."""
    from pathlib import Path

    folders = Path(__file__).resolve().parents[1] / "cases"
    builtins = [p.parent.name for p in folders.glob("*/spec.py")]
    out = equiv("list", "--json")
    assert out.returncode == 0, out.stderr
    listed = {c["name"]: c for c in json.loads(out.stdout)["cases"]}
    assert builtins
    for name in builtins:
        assert listed[name]["origin"] == "built-in" and listed[name]["available"], listed[name]
    text = equiv("list").stdout
    assert "two_layer_mlp" in text and "[built-in]" in text


def test_list_does_not_import_frameworks():
    code = (
        "import sys, equiv.cli.main as c; c.main(['list']);"
        "bad = [m for m in ('torch', 'tensorflow', 'jax', 'keras') if m in sys.modules];"
        "print('IMPORTED', bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_small_run_writes_parity_json(tmp_path):
    out = equiv(
        "run",
        "--case",
        "two_layer_mlp",
        "--backend",
        "numpy",
        "--steps",
        "3",
        "--bench-rounds",
        "2",
        "--out",
        str(tmp_path),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads((tmp_path / "parity.json").read_text())
    assert doc["schema"] == "equiv.parity/2"
    assert {"python", "platform", "versions", "threads", "seed"} <= doc["environment"].keys()
    cell = doc["cells"][0]
    for key in (
        "case",
        "backend",
        "dtype",
        "status",
        "reason",
        "steps",
        "max_error",
        "first_divergence",
        "benchmark",
    ):
        assert key in cell
    assert {"median_s", "first_call_s", "rounds"} <= cell["benchmark"].keys()
    assert cell["status"] == "pass"
    assert len(cell["digest"]) == 16
    assert (tmp_path / "steps" / "two_layer_mlp__numpy__float64.npz").exists()
    # a passing cell keeps no arrays unless asked (--keep-arrays)
    assert not (tmp_path / "trajectories").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--case", "nope"], "unknown case 'nope'; valid cases:"),
        (["run", "--backend", "tf.nope"], "unknown backend 'tf.nope'; valid backends:"),
        (["run", "--dtype", "float16"], "unknown dtype 'float16'"),
        (["run", "--steps", "0"], "must be a positive integer"),
        (["run", "--steps", "-2"], "must be a positive integer"),
        (["run", "--seed", "1.5"], "seed must be an integer"),
        (["run", "--out", "/proc/equiv-cannot-write"], "cannot write to --out"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    out = equiv(*args, cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert message in lines[0]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "reports" / "parity.json").exists()
