"""A run cut off loses nothing (issue 11): SIGTERM or SIGINT leaves a partial, valid document
with every finished cell and no process behind it; ``--resume`` completes it to the document an
uninterrupted run writes; even SIGKILL of the run leaves no worker behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from equiv.results.document import load_document
from equiv.results.journal import NAME as JOURNAL

#: numpy cells only (no framework to import) of the six small seed cases: 12 cells of about a
#: second each, in one worker (resnet18's numpy cells take minutes at 150 steps)
SMALL_CASES = [
    "two_layer_mlp",
    "sigmoid_custom_op",
    "dynamic_branching",
    "static_graph_step",
    "keras_sequential",
    "keras_sequential_adam",
]
RUN = [
    "--backend",
    "numpy",
    *(arg for case in SMALL_CASES for arg in ("--case", case)),
    "--steps",
    "150",
    "--bench-rounds",
    "0",
    "--jobs",
    "1",
]


def equiv(*args: str, marker: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "EQUIV_TEST_MARKER": marker}
    return subprocess.Popen(
        [sys.executable, "-m", "equiv", "run", *args],
        env=env,
        start_new_session=True,  # a process group of its own, as a terminal's job or CI step
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def processes_with(marker: str) -> list[int]:
    """PIDs whose environment carries ``marker``: the run and every worker it started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if f"EQUIV_TEST_MARKER={marker}".encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found


def wait_for_cells(out: Path, count: int, proc: subprocess.Popen, limit: float = 120) -> None:
    """Until the journal holds ``count`` finished cells."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            lines = (out / JOURNAL).read_text().splitlines()
        except FileNotFoundError:
            lines = []
        if len(lines) - 1 >= count:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"no {count} cells in {limit} s")


def gone(marker: str, limit: float = 10) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not processes_with(marker):
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("whole")
    proc = equiv(*RUN, "--out", str(out), marker=uuid.uuid4().hex)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert not (out / JOURNAL).exists()  # a completed run removes its journal
    return load_document(out / "parity.json")


def verdicts(document: dict) -> dict:
    return {c["id"]: (c["status"], c["reason"], c["max_ratio"]) for c in document["cells"]}


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_cut_off_run_keeps_its_cells_and_resume_completes_it(tmp_path, uninterrupted, sig):
    out, marker = tmp_path / "out", uuid.uuid4().hex
    proc = equiv(*RUN, "--out", str(out), marker=marker)
    wait_for_cells(out, 2, proc)
    os.killpg(proc.pid, sig)  # to the whole group, workers included, as Ctrl-C or a CI limit
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr
    assert f"equiv run --resume {out}" in stderr
    assert gone(marker), "a worker outlived its run"
    partial = load_document(out / "parity.json")
    finished = {c["id"] for c in partial["cells"]}
    missing = partial["incomplete"]["missing"]
    assert len(finished) >= 2 and missing
    assert finished.isdisjoint(missing)
    assert finished | set(missing) == set(verdicts(uninterrupted))
    assert partial["summary"]["total"] == len(finished)
    assert partial["incomplete"]["reason"].startswith(f"interrupted by {sig.name}")
    assert "Incomplete run" in (out / "parity.html").read_text()
    for cell_id in finished:  # the finished cells, as an uninterrupted run has them
        assert verdicts(partial)[cell_id] == verdicts(uninterrupted)[cell_id]

    resumed = subprocess.run(
        [sys.executable, "-m", "equiv", "run", "--resume", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(finished)} cells done, {len(missing)} to run" in resumed.stdout
    complete = load_document(out / "parity.json")
    assert "incomplete" not in complete
    assert verdicts(complete) == verdicts(uninterrupted)
    assert complete["summary"] == uninterrupted["summary"]
    assert "Incomplete run" not in (out / "parity.html").read_text()
    assert not (out / JOURNAL).exists()
    assert len(list((out / "steps").glob("*.npz"))) == len(complete["cells"])


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux's /proc")
def test_no_worker_outlives_a_run_killed_with_sigkill(tmp_path):
    """Only the run gets SIGKILL; its worker is busy in a long cell (it would notice the
    closed pipe only when the cell ends, minutes later) and must die at once anyway."""
    out, marker = tmp_path / "out", uuid.uuid4().hex
    long_cell = ["--backend", "numpy", "--case", "two_layer_mlp", "--dtype", "float64"]
    cache = ["--cache-dir", str(tmp_path / "cache")]  # its calibration never finishes
    proc = equiv(*long_cell, "--steps", "200000", *cache, "--out", str(out), marker=marker)
    deadline = time.monotonic() + 60
    while len(processes_with(marker)) < 2:  # the run and its worker
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(2.0)  # the worker is computing now
    proc.kill()
    proc.communicate(timeout=30)
    assert gone(marker), "a worker outlived a run killed with SIGKILL"
    assert json.loads((out / JOURNAL).read_text().splitlines()[0])["planned"]


def test_resume_refuses_what_it_cannot_resume(tmp_path):
    nothing = subprocess.run(
        [sys.executable, "-m", "equiv", "run", "--resume", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert nothing.returncode == 2
    assert nothing.stderr.count("\n") == 1 and "nothing to resume" in nothing.stderr
    (tmp_path / JOURNAL).write_text("{}\n")
    foreign = subprocess.run(
        [sys.executable, "-m", "equiv", "run", "--resume", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert foreign.returncode == 2 and "not an equiv run journal" in foreign.stderr
    both = subprocess.run(
        [sys.executable, "-m", "equiv", "run", "--resume", str(tmp_path), "--seed", "3"],
        capture_output=True,
        text=True,
    )
    assert both.returncode == 2 and "drop --seed" in both.stderr


def test_a_signal_while_a_cell_is_kept_is_delivered_once_it_is_kept():
    """The cell that finishes as the signal comes is in the journal and the partial document
    both (CI once saw it in the journal only: the signal landed between the two)."""
    from equiv.cli.commands import run_cmd
    from equiv.cli.commands.run_cmd import Interrupted, interruptible, signals_deferred

    kept = []
    with pytest.raises(Interrupted), interruptible():
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            deadline = time.monotonic() + 10  # until Python has run the handler
            while run_cmd._Deferral.pending is None and time.monotonic() < deadline:
                time.sleep(0.001)
            kept.append("journal")
            kept.append("document")
        kept.append("after")  # never: the deferred signal is delivered here
    assert kept == ["journal", "document"]


def test_resume_drops_a_journal_line_a_kill_cut_short(tmp_path):
    from equiv.contract.records import Cell, CellResult
    from equiv.results.journal import Journal, read

    planned = [Cell("two_layer_mlp", "numpy", d) for d in ("float32", "float64")]
    journal = Journal.start(tmp_path, {"seed": 0}, [c.id for c in planned])
    journal.append(CellResult(cell=planned[0], status="skip", reason="first"))
    journal.close()
    with open(tmp_path / JOURNAL, "a") as f:
        f.write('{"id": "two_layer_mlp-numpy-flo')  # cut off mid-line
    assert list(read(tmp_path).done) == [planned[0].id]

    resumed = Journal.reopen(tmp_path)
    resumed.append(CellResult(cell=planned[1], status="skip", reason="second"))
    resumed.close()
    assert list(read(tmp_path).done) == [c.id for c in planned]
