"""``--executor ray``: the same statuses and margins as local workers, a lost worker's cell
retried once, and bad input in one line.

The cluster tests start a local Ray cluster (``ray start --head``) and need Ray: they carry
the ``ray`` marker and run with ``pytest -m ray`` (``tox -e ray``), not in the default run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from toy_plugin import backend_plugin

from equiv.cli.main import main

SWEEP = [
    "sweep", "--seeds", "2", "--case", "two_layer_mlp", "--case", "minibatch",
    "--backend", "numpy", "--backend", "torch.eager",
]  # fmt: skip

#: a backend whose steps are slow enough to be killed mid-cell (a second each), on the
#: workers' path; fast while the file $TOY_SLOW_FAST exists (the cluster's environment)
SLOW_PLUGIN = """
import os, time
from equiv.backends.numpy import NumpyBackend
from equiv.reference.trainer import ReferenceTrainer

class Slow(ReferenceTrainer):
    def run_step(self):
        if not os.path.exists(os.environ["TOY_SLOW_FAST"]):
            time.sleep(1.0)
        super().run_step()

class SlowBackend(NumpyBackend):
    id = "toy.slow"
    framework = "toy"
    def build_trainer(self, spec, state, module):
        return Slow(spec, state, module=module)

def backends():
    return [SlowBackend()]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster of 2 CPUs, started as a real one is (``ray start --head``), whose
    workers see the slow toy backend; yields (address, environment for equiv's processes)."""
    pytest.importorskip("ray")
    site = backend_plugin(tmp_path_factory.mktemp("site"), "toy_slow", SLOW_PLUGIN)
    paths = [str(site), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    # a throwaway cluster on this machine: without Ray's token authentication (a real
    # cluster's token is the user's to set, as Ray's documentation says)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "TOY_SLOW_FAST": str(site / "fast"),
    }
    env.pop("RAY_ADDRESS", None)
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    port = _free_port()
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--object-store-memory=200000000"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not _answers(port):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the local Ray cluster did not start (exit {head.poll()})")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)


def _sweep(args: list[str], env: dict, out: Path, timeout: float = 600) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "equiv", *args, "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((out / "sweep.json").read_text())


def _by_cell(report: dict) -> dict:
    return {(r["seed"], r["case"], r["backend"], r["dtype"]): r for r in report["rows"]}


@pytest.mark.ray
def test_a_sweep_on_ray_gives_the_local_statuses_and_margins(cluster, tmp_path):
    address, env = cluster
    ray_rows = _by_cell(_sweep([*SWEEP, "--executor", "ray", "--ray-address", address], env,
                               tmp_path / "ray"))  # fmt: skip
    local_rows = _by_cell(_sweep(SWEEP, env, tmp_path / "local"))
    assert len(local_rows) == 16 and ray_rows.keys() == local_rows.keys()
    for key, local in local_rows.items():
        on_ray = ray_rows[key]
        assert on_ray["retries"] == 0, key
        for field in ("status", "margin", "max_ratio", "coverage", "resynchronised_from"):
            assert on_ray[field] == local[field], (key, field, on_ray[field], local[field])


def _process_titled(title: str, timeout: float, other_than: set[int] = frozenset()) -> int:
    """The pid of the Ray worker running the task named ``title`` (Ray sets the process
    title to ``ray::<task name>`` while it runs one), other than the pids given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(entry.name) in other_than:
                continue
            if cmdline.split(b"\0")[0].strip() == f"ray::{title}".encode():
                return int(entry.name)
        time.sleep(0.2)
    pytest.fail(f"no Ray worker ran {title} within {timeout:g} s")


@pytest.mark.ray
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker through /proc")
@pytest.mark.parametrize(
    ("kills", "status", "retries"),
    [(1, "pass", 1), (2, "error", 1)],
    ids=["killed-once-retried", "killed-twice-error"],
)
def test_a_worker_killed_mid_cell_loses_only_that_cell(cluster, tmp_path, kills, status, retries):
    """Killed once, the cell is submitted again and passes; killed again on its retry, it is
    an ``error`` that says so. Either way the sweep completes and the other cell is intact."""
    address, env = cluster
    out = tmp_path / "out"
    args = [
        "sweep", "--seeds", "1", "--case", "two_layer_mlp", "--backend", "numpy",
        "--backend", "toy.slow", "--dtype", "float64", "--steps", "6",
        "--executor", "ray", "--ray-address", address, "--out", str(out),
    ]  # fmt: skip
    sweep = subprocess.Popen(
        [sys.executable, "-m", "equiv", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        killed: set[int] = set()
        for _ in range(kills):
            victim = _process_titled("two_layer_mlp-toy.slow-float64", 120, other_than=killed)
            time.sleep(1.5)  # into its steps
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
        stdout, stderr = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    report = json.loads((out / "sweep.json").read_text())
    rows = _by_cell(report)
    assert set(rows) == {
        (0, "two_layer_mlp", "numpy", "float64"),
        (0, "two_layer_mlp", "toy.slow", "float64"),
    }, stdout[-2000:] + stderr[-3000:]
    victim_row = rows[(0, "two_layer_mlp", "toy.slow", "float64")]
    assert (victim_row["status"], victim_row["retries"]) == (status, retries)
    if status == "error":
        assert "lost its Ray worker 2 times" in victim_row["reason"]
    intact = rows[(0, "two_layer_mlp", "numpy", "float64")]
    assert (intact["status"], intact["retries"]) == ("pass", 0)
    assert sweep.returncode == (0 if status == "pass" else 1)


@pytest.mark.ray
def test_a_cell_past_its_timeout_on_ray_is_killed_and_the_run_goes_on(cluster, tmp_path):
    address, env = cluster
    out = tmp_path / "out"
    args = [
        "run", "--case", "two_layer_mlp", "--backend", "numpy", "--backend", "toy.slow",
        "--dtype", "float64", "--steps", "60", "--bench-rounds", "0", "--timeout", "8",
        "--executor", "ray", "--ray-address", address, "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "equiv", *args], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    cells = {c["id"]: c for c in json.loads((out / "parity.json").read_text())["cells"]}
    assert cells["two_layer_mlp-toy.slow-float64"]["status"] == "timeout"
    assert "Ray task was killed" in cells["two_layer_mlp-toy.slow-float64"]["reason"]
    assert cells["two_layer_mlp-numpy-float64"]["status"] == "pass"


@pytest.mark.ray
def test_an_address_where_no_cluster_answers_is_one_line_and_exit_2(tmp_path, capsys):
    pytest.importorskip("ray")
    port = _free_port()  # nothing listens there
    out = tmp_path / "out"
    code = main([*SWEEP, "--executor", "ray", "--ray-address", f"127.0.0.1:{port}",
                 "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "no Ray cluster answers at 127.0.0.1" in err, err
    assert not list(out.iterdir())


@pytest.mark.parametrize("command", ["sweep", "run"])
def test_executor_ray_without_ray_is_one_line_and_exit_2(command, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as where it is missing
    out = tmp_path / "out"
    args = [command, "--case", "two_layer_mlp", "--backend", "numpy", "--executor", "ray"]
    code = main([*args, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "needs Ray, which is not installed" in err, err
    assert not list(out.iterdir())


def test_a_malformed_ray_address_is_one_line_and_exit_2(tmp_path, capsys):
    pytest.importorskip("ray")
    out = tmp_path / "out"
    args = ["run", "--case", "two_layer_mlp", "--backend", "numpy", "--executor", "ray"]
    code = main([*args, "--ray-address", "nowhere", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not host:port" in err, err
    assert not list(out.iterdir())


@pytest.mark.ray
def test_a_run_on_ray_cut_off_is_resumed_on_ray(cluster, tmp_path):
    """SIGTERM after the first cell: the journal keeps it, and --resume runs the rest on the
    executor the journal records, into one complete document."""
    address, env = cluster
    out = tmp_path / "out"
    args = [
        "run", "--case", "two_layer_mlp", "--backend", "numpy", "--backend", "toy.slow",
        "--dtype", "float64", "--steps", "120", "--bench-rounds", "0", "--threads", "1",
        "--executor", "ray", "--out", str(out),
    ]  # fmt: skip
    env = {**env, "RAY_ADDRESS": address}
    run = subprocess.Popen([sys.executable, "-m", "equiv", *args], env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        journal = out / "journal.jsonl"
        deadline = time.monotonic() + 120

        # the numpy cell takes seconds, the slow one 120 (until the resume makes it fast);
        # the journal's first line plans both, each later line is a finished cell
        def finished() -> list[str]:
            return journal.read_text().splitlines()[1:] if journal.exists() else []

        while not any("two_layer_mlp-numpy-float64" in line for line in finished()):
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.2)
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    partial = json.loads((out / "parity.json").read_text())
    assert [c["id"] for c in partial["cells"]] == ["two_layer_mlp-numpy-float64"]
    fast = Path(env["TOY_SLOW_FAST"])
    fast.touch()  # the resumed slow cell need not take its 120 s
    try:
        resumed = subprocess.run(
            [sys.executable, "-m", "equiv", "run", "--resume", str(out)],
            env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        fast.unlink()
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    document = json.loads((out / "parity.json").read_text())
    assert document["run"]["executor"] == "ray" and "incomplete" not in document
    assert {c["id"]: c["status"] for c in document["cells"]} == {
        "two_layer_mlp-numpy-float64": "pass",
        "two_layer_mlp-toy.slow-float64": "pass",
    }


def test_bad_executor_input_is_one_line_even_where_memory_limits_the_workers(
    tmp_path, capsys, monkeypatch
):
    """The line that says memory set the number of workers must not precede the error."""
    from equiv.running import capacity

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setattr(capacity, "available_memory_mb", lambda: 1.0)
    monkeypatch.setattr(capacity.os, "cpu_count", lambda: 4)
    out = tmp_path / "out"
    args = ["run", "--case", "two_layer_mlp", "--backend", "numpy", "--executor", "ray"]
    assert main([*args, "--out", str(out)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
