"""Running cells side by side: workers in parallel, benchmarks alone, lean imports, and one
report from ``pytest -n``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from toy_plugin import backend_plugin

from equiv.backends.registry import get_backend

needs_torch = pytest.mark.skipif(
    get_backend("torch.eager").availability() is not None, reason="needs torch"
)

# A numpy backend whose trainers log the wall time of every step with their process id and the
# step's index in that trainer: a trainer's steps past the run's --steps are its benchmark.
PLUGIN = """
import os, time
from equiv.backends.numpy import NumpyBackend
from equiv.reference.trainer import ReferenceTrainer

LOG = os.environ["TOY_STEP_LOG"]

class Logged(ReferenceTrainer):
    def run_step(self):
        super().run_step()
        with open(LOG, "a") as f:
            f.write(f"{BACKEND_ID} {os.getpid()} {self.t} {time.monotonic()}\\n")
        time.sleep(0.002)

def _backend(backend_id):
    class Toy(NumpyBackend):
        id = backend_id
        framework = "toy"
        def build_trainer(self, spec, state, module):
            globals()["BACKEND_ID"] = self.id
            return Logged(spec, state, module=module)
    return Toy()

def backends():
    return [_backend("toy.a"), _backend("toy.b")]
"""


def toy_site(tmp_path: Path) -> Path:
    return backend_plugin(tmp_path / "site", "toy_steps", PLUGIN)


def test_workers_run_side_by_side_and_each_benchmark_runs_alone(tmp_path):
    log = tmp_path / "steps.log"
    env = {**os.environ, "PYTHONPATH": str(toy_site(tmp_path)), "TOY_STEP_LOG": str(log)}
    steps, rounds = 40, 40
    proc = subprocess.run(
        [sys.executable, "-m", "equiv", "run", "--case", "two_layer_mlp"]
        + ["--backend", "toy.a", "--backend", "toy.b", "--dtype", "float64"]
        + ["--steps", str(steps), "--bench-rounds", str(rounds), "--jobs", "2"]
        + ["--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in log.read_text().splitlines()]
    by_backend: dict[str, list[tuple[int, float]]] = {}
    for backend, _pid, t, when in rows:
        by_backend.setdefault(backend, []).append((int(t), float(when)))
    a, b = by_backend["toy.a"], by_backend["toy.b"]

    def lockstep(steps_of):  # the parity run's trainer: the first `steps` steps logged
        return [w for t, w in steps_of[: steps + 1] if t <= steps]

    def bench(steps_of):  # the same trainer, past its parity steps
        return [w for t, w in steps_of if t > steps]

    # side by side: the two lockstep phases overlap in time
    assert min(lockstep(a)[-1], lockstep(b)[-1]) > max(lockstep(a)[0], lockstep(b)[0])
    # alone: no step of the other backend falls inside one backend's benchmark
    for mine, other in ((a, b), (b, a)):
        timed = bench(mine)
        assert len(timed) >= rounds
        inside = [w for _, w in other if timed[0] < w < timed[-1]]
        assert not inside, f"{len(inside)} steps of another worker ran during a benchmark"
    doc = json.loads((tmp_path / "out" / "parity.json").read_text())
    assert doc["run"]["jobs"] == 2
    assert "paused" in doc["run"]["benchmark_method"]
    assert all(c["benchmark"]["rounds"] == rounds for c in doc["cells"])


@needs_torch
@pytest.mark.parametrize("backend", ["torch.eager", "torch.jit"])
def test_eager_and_jit_workers_do_not_import_dynamo_or_inductor(backend):
    code = textwrap.dedent(
        f"""
        import sys
        import torch
        from equiv.backends.registry import get_backend
        get_backend({backend!r}).configure(1)
        assert torch.are_deterministic_algorithms_enabled()
        print(sorted(m for m in sys.modules if m.startswith(("torch._dynamo", "torch._inductor"))))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@needs_torch
def test_compile_still_asks_inductor_for_determinism():
    code = (
        "from equiv.backends.registry import get_backend;"
        "get_backend('torch.compile').configure(1);"
        "import torch._inductor.config as c; print(c.deterministic)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr


@needs_torch
def test_pytest_n_writes_one_complete_report(tmp_path):
    """... also when a test of the session runs pytest of its own (as the conformance kit's
    users do): that inner session must leave the outer one's results alone (planted: when the
    spool folder was handed down in the environment, the inner run took it for its own and
    deleted it, and the outer report was never written)."""
    pytest.importorskip("xdist")
    report = tmp_path / "report"
    nested = tmp_path / "test_nested_pytest.py"
    nested.write_text(
        "import subprocess, sys\n"
        "def test_runs_pytest_of_its_own(tmp_path):\n"
        "    (tmp_path / 'test_x.py').write_text('def test_x():\\n    pass\\n')\n"
        "    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', tmp_path]\n"
        "    assert subprocess.run(cmd, capture_output=True, cwd=tmp_path).returncode == 0\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider", str(nested)]
        + ["tests/test_matrix.py", "--equiv-case", "two_layer_mlp", "--equiv-steps", "5"]
        + ["--equiv-backend", "numpy", "--equiv-backend", "torch.eager"]
        + ["--equiv-cache-dir", str(tmp_path / "cache"), "--equiv-report", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((report / "parity.json").read_text())
    assert sorted(c["id"] for c in doc["cells"]) == sorted(
        f"two_layer_mlp-{b}-{d}" for b in ("numpy", "torch.eager") for d in ("float32", "float64")
    )
    assert doc["summary"]["pass"] == 4
    assert doc["run"]["benchmark_method"].startswith("not taken: pytest-xdist")
    assert all(not c["benchmark"].get("median_s") for c in doc["cells"])


@pytest.mark.skipif(get_backend("tf.eager").availability() is not None, reason="needs tensorflow")
def test_a_tensorflow_worker_does_not_import_jax_or_matplotlib():
    """TF imports jax (TF Lite) and matplotlib (through Keras) only because they are installed;
    its worker hides them (Backend.worker_hides). The cell reports what its process holds."""
    from equiv.backends.implementations import ImplSource, Patch
    from equiv.contract.records import Cell
    from equiv.running.runner import RunOptions
    from equiv.running.workers import run_group

    backend = get_backend("tf.eager")
    report = (
        "def build(state, backend):\n"
        "    import sys\n"
        "    raise RuntimeError('loaded: ' + repr(sorted(m for m in ('jax', 'matplotlib', "
        "'tensorflow') if sys.modules.get(m) is not None)))\n"
    )
    impl = ImplSource(
        "cases.two_layer_mlp.tf_impl", (Patch("def build(state, backend):\n", report),)
    )
    options = RunOptions.verdict_only(steps=2)
    cell = Cell("two_layer_mlp", "tf.eager", "float64")
    (hidden,) = run_group(
        [(cell, impl)], options, dict(backend.worker_env), hides=backend.worker_hides
    )
    assert "loaded: ['tensorflow']" in hidden.reason, hidden.reason
    # without the hides, the same worker does import them (what the test would miss otherwise)
    (plain,) = run_group([(cell, impl)], options, dict(backend.worker_env))
    assert "'jax'" in plain.reason and "'matplotlib'" in plain.reason, plain.reason
