"""A mistyped selection under pytest is a one-line usage error, not the plugin's traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from nested_pytest import child_environment

ROOT = Path(__file__).resolve().parents[1]


def collect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args]
        + ["tests/test_matrix.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=child_environment(),
        timeout=300,
    )


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--equiv-case", "nope", "unknown case 'nope'"),
        ("--equiv-backend", "torch.nope", "unknown backend 'torch.nope'"),
        ("--equiv-dtype", "float16", "float16"),
    ],
)
def test_an_unknown_selection_is_one_line_and_a_usage_error(option, value, says):
    proc = collect(option, value)
    out = proc.stdout + proc.stderr
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out[-2000:]
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and says in errors[0], out[-2000:]
    assert "Traceback" not in out and "pytest_plugin.py" not in out, out[-2000:]
