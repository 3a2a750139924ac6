"""One backend that raises, returns NaN, kills its process or hangs must not take the run down."""

import json
import subprocess
import sys

import pytest
from toy_plugin import backend_plugin

from equiv.backends.implementations import ImplSource, Patch
from equiv.backends.registry import get_backend
from equiv.contract.divergence import Divergence
from equiv.contract.records import Cell
from equiv.running.runner import RunOptions, run_cell
from equiv.running.workers import Recycle, WorkerSession, run_group

MODULE = "cases.two_layer_mlp.torch_impl"
OPTIONS = RunOptions.verdict_only(steps=4, timeout_s=60)

pytestmark = pytest.mark.skipif(
    get_backend("torch.eager").availability() is not None, reason="needs torch"
)


def planted(old, new):
    return ImplSource(MODULE, (Patch(old, new),))


CELL = Cell("two_layer_mlp", "torch.eager", "float64")
GOOD = Cell("two_layer_mlp", "torch.eager", "float32")


def test_an_exception_becomes_an_error_cell_with_its_traceback():
    impl = planted("        loss.backward()\n", "        raise RuntimeError('planted failure')\n")
    result = run_cell(CELL, OPTIONS, impl=impl)
    assert result.status == "error"
    assert "planted failure" in result.reason
    assert "Traceback" in result.traceback


def test_nan_becomes_an_error_naming_the_step_and_quantity():
    impl = planted("self.w1 -= self.lr * self.w1.grad", "self.w1 -= float('nan') * self.w1.grad")
    result = run_cell(CELL, OPTIONS, impl=impl)
    assert result.status == "error"
    assert result.first_divergence == Divergence(0, "non-finite", "params/w1")
    assert "step 0" in result.reason and "params/w1" in result.reason


def test_a_killed_worker_is_an_error_and_the_group_goes_on():
    crash = planted("        loss.backward()\n", "        import os; os._exit(7)\n")
    results = list(run_group([(CELL, crash), (GOOD, None)], OPTIONS))
    assert [r.status for r in results] == ["error", "pass"]
    assert "exit code 7" in results[0].reason


def test_a_hanging_cell_times_out_and_the_group_goes_on():
    hang = planted("        loss.backward()\n", "        import time; time.sleep(600)\n")
    options = RunOptions.verdict_only(steps=4, timeout_s=8)
    # the fresh worker's cell imports no framework: under a loaded CI machine (pytest -n) a
    # torch import alone can take most of the 8 s
    light = Cell("two_layer_mlp", "numpy", "float32")
    results = list(run_group([(CELL, hang), (light, None)], options))
    assert [r.status for r in results] == ["timeout", "pass"]


def test_worker_records_are_float64_bit_exact():
    options = RunOptions(steps=3, bench_rounds=0, keep_arrays=True)
    (in_worker,) = run_group([(CELL, None)], options)
    here = run_cell(CELL, options)
    assert in_worker.digest == here.digest is not None
    for key, value in here.trajectory.items():
        assert in_worker.trajectory[key].dtype == value.dtype
        assert in_worker.trajectory[key].tobytes() == value.tobytes(), key


PLUGIN = """
import os
from equiv.backends.numpy import NumpyBackend
from equiv.reference.trainer import ReferenceTrainer

class Crashing(ReferenceTrainer):
    def run_step(self):
        if self.t == 1:
            os._exit(9)
        super().run_step()

class CrashBackend(NumpyBackend):
    id = "toy.crash"
    framework = "toy"
    def build_trainer(self, spec, state, module):
        return Crashing(spec, state, module=module)

def backends():
    return [CrashBackend()]
"""


def test_a_crashing_backend_in_a_full_run_gives_exit_1_and_a_complete_report(tmp_path):
    site = backend_plugin(tmp_path / "site", "toy_crash", PLUGIN)
    out = tmp_path / "out"
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "equiv",
            "run",
            "--case",
            "two_layer_mlp",
            "--backend",
            "numpy",
            "--backend",
            "toy.crash",
            "--steps",
            "3",
            "--bench-rounds",
            "0",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    doc = json.loads((out / "parity.json").read_text())
    status = {(c["backend"], c["dtype"]): c["status"] for c in doc["cells"]}
    assert status[("numpy", "float64")] == "pass"
    assert status[("toy.crash", "float64")] == "error"
    assert status[("toy.crash", "float32")] == "error"


LIGHT = [
    (Cell("two_layer_mlp", "numpy", "float64"), None),
    (Cell("two_layer_mlp", "numpy", "float32"), None),
    (Cell("sigmoid_custom_op", "numpy", "float64"), None),
]


@pytest.mark.parametrize(
    "recycle, fresh",
    [
        (None, [True, False, False]),
        (Recycle(max_cells=2), [True, False, True]),
        (Recycle(max_rss_mb=1), [True, True, True]),  # every worker is past 1 MB
        (Recycle(max_rss_mb=1e6), [True, False, False]),
    ],
    ids=["no-limit", "two-cells", "past-rss", "under-rss"],
)
def test_a_worker_is_replaced_when_its_limit_is_reached(recycle, fresh):
    """A fresh process is a cell with a ``startup`` phase; the verdicts do not change."""
    options = RunOptions.verdict_only(steps=2)
    results = list(run_group(LIGHT, options, recycle=recycle))
    assert ["startup" in r.phases_s for r in results] == fresh
    assert [r.status for r in results] == ["pass"] * 3


def test_a_session_worker_past_its_limit_is_closed_before_the_next_cell():
    session = WorkerSession(RunOptions.verdict_only(steps=2), recycle=Recycle(max_cells=1))
    try:
        first = session.run(LIGHT[0])
        assert session.worker is None and first.status == "pass"
        assert session.run(LIGHT[1]).status == "pass"
    finally:
        session.close()
