"""What ``equiv run`` prints (issue papercut 9): a line per cell that fits a terminal, no
framework banners from the workers, and a time left that learns from the cells already run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from equiv.cli.progress import cell_line, short_reason
from equiv.contract.records import Cell, CellResult
from equiv.results.history import Durations, time_left

EXPLAINED = (
    "Keras's Adam uses the 'epsilon hat' form of the Adam paper: epsilon is added to sqrt(v) "
    "before bias correction, i.e. Adam with eps * sqrt(1 - beta_2^t); and on TensorFlow, "
    "Keras's ops.cast(beta, float64) turns the Python float into a float32 tensor first. Proof: "
    "the reference variant {'optimizer': 'adam_epsilon_hat'} matches (max 0.19 of tolerance "
    "over 3 steps) where the reference does not (first divergence at step 0, params w1 "
    "(update): error 6.66e-05 > tolerance 1.48e-14)"
)
CELL = Cell("keras_sequential_adam", "keras.tensorflow", "float64")

# --- one line per cell -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reason, short",
    [
        (EXPLAINED, "Keras's Adam uses the 'epsilon hat' form of the Adam paper..."),
        (
            "first divergence at step 3, grads w1 (backward): error 2e-05 > tolerance 1e-06",
            "first divergence at step 3, grads w1 (backward)...",
        ),
        ("no result within 900 s; the worker was killed", "no result within 900 s..."),
        # a clause shorter than MIN_CLAUSE is no summary: the exception's name alone says little
        ("ValueError: shapes (3,) and (4,) not aligned", None),
        ("worker process died (exit code -11) in this cell", None),
        ("RuntimeError: the first line\n  the second line", "RuntimeError: the first line..."),
        ("x" * 300, "x" * 117 + "..."),
    ],
)
def test_the_short_reason_is_the_first_clause(reason, short):
    assert short_reason(reason) == (reason if short is None else short)  # None: kept whole


def result(status: str = "explained", reason: str = EXPLAINED) -> CellResult:
    return CellResult(cell=CELL, status=status, reason=reason, duration_s=1.1)


@pytest.mark.parametrize("width", [20, 40, 60, 80, 100, 120, 200])
def test_a_line_fits_the_width_and_keeps_status_time_and_estimate(width):
    line, (start, end) = cell_line(7, 360, result(), "~29m left", width=width, ellipsis="…")
    assert len(line) <= width
    assert line[start:end] == "explained" or width < end
    if width >= 100:
        assert line.startswith(
            "[7/360] keras_sequential_adam-keras.tensorflow-float64: explained (1.1s) - Keras's"
        )
        assert line.endswith("…; ~29m left")
    if width >= 200:  # the whole first clause fits
        assert " - Keras's Adam uses the 'epsilon hat' form of the Adam paper…; ~29m" in line


def test_verbose_gives_the_full_reason_and_a_pass_none():
    line, _ = cell_line(7, 360, result(), "~29m left", verbose=True)
    assert line == (
        "[7/360] keras_sequential_adam-keras.tensorflow-float64: explained (1.1s) - "
        f"{EXPLAINED}; ~29m left"
    )
    passed, _ = cell_line(1, 2, result("pass", "ignored"), verbose=True)
    assert passed == "[1/2] keras_sequential_adam-keras.tensorflow-float64: pass (1.1s)"


def test_a_pass_with_a_caveat_says_so_beside_its_status():
    from equiv.contract.records import NO_TRACE

    passed = result("pass", "")
    passed.add_caveat(NO_TRACE, "a compiled mode recorded no trace")
    line, _ = cell_line(1, 2, passed, width=80)
    assert line == ("[1/2] keras_sequential_adam-keras.tensorflow-float64: pass (1.1s) [no_trace]")


def equiv_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "equiv", "run", "--backend", "numpy", "--case", "two_layer_mlp"]
        + ["--steps", "3", "--bench-rounds", "0", "--jobs", "1", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "COLUMNS": "30"},
    )


def test_the_cli_prints_plain_lines_to_a_pipe(tmp_path):
    """Not a terminal (a CI log): a plain line per cell, whatever COLUMNS says; -v accepted."""
    out = equiv_run("--out", str(tmp_path / "a"), "--cache-dir", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("[1/2] two_layer_mlp-numpy-float64: pass (") and len(lines[0]) > 30
    assert "\x1b" not in out.stdout and "\r" not in out.stdout
    verbose = equiv_run("-v", "--out", str(tmp_path / "b"), "--no-cache", cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stdout.startswith("[1/2] two_layer_mlp-numpy-float64: pass (")


# --- the time left -----------------------------------------------------------------------------


def cells(n: int, backend: str = "numpy") -> list[Cell]:
    return [Cell(f"case{i}", backend, "float64") for i in range(n)]


def naive(unfinished, last, jobs=1) -> float:
    """The estimate before papercut 9: last run's durations, summed, over the workers."""
    return sum(last(c) for c in unfinished) / jobs


def test_the_time_left_learns_that_cells_run_slower_than_last_time():
    """History says 1 s a cell; on a loaded machine they take 3 s."""
    planned = cells(20)
    last = lambda cell: 1.0  # noqa: E731
    for done in (2, 5, 10, 15):
        finished = [(c, 3.0) for c in planned[:done]]
        truth = 3.0 * (20 - done)
        estimate = time_left(planned[done:], finished, last)
        assert 0.7 * truth <= estimate <= 1.1 * truth, (done, estimate, truth)
        assert naive(planned[done:], last) < 0.4 * truth  # what the old estimate said
    # and faster than last time, as much
    estimate = time_left(planned[10:], [(c, 0.25) for c in planned[:10]], last)
    assert 2.5 <= estimate <= 4.0  # truth 2.5 s; the history alone says 10 s


def test_each_backend_learns_its_own_pace():
    tf, np_ = cells(10, "tf.eager"), cells(10, "numpy")
    last = lambda cell: 1.0  # noqa: E731
    finished = [(c, 4.0) for c in tf[:5]] + [(c, 1.0) for c in np_[:5]]
    per_tf = time_left(tf[5:], finished, last) / 5
    per_np = time_left(np_[5:], finished, last) / 5
    assert per_tf > 3.0 and per_np < 1.5


def test_cells_never_run_before_cost_what_this_runs_cells_cost():
    planned = cells(10)
    never = lambda cell: None  # noqa: E731 - another step count: no history for any cell
    assert time_left(planned, [], never) is None  # nothing to go on: no made-up number
    assert time_left(planned, [], never, typical=5.0) == 50.0
    finished = [(c, 2.0) for c in planned[:4]]
    assert time_left(planned[4:], finished, never, typical=30.0) == pytest.approx(12.0)


def test_skipped_cells_cost_nothing():
    """A skip's ~0 s is remembered: next time it is not guessed at the average cell."""
    planned = cells(4)
    skipped = [CellResult(cell=c, status="skip", reason="no implementation") for c in planned[:2]]
    passed = [CellResult(cell=c, status="pass", duration_s=10.0) for c in planned[2:]]
    history = Durations(None, seed=0, steps=None)
    history.record(skipped + passed)
    assert history.last(planned[0]) == 0.0
    assert time_left(planned, [], history.last) == pytest.approx(20.0)


def test_the_time_left_is_that_of_the_busiest_worker():
    """Each backend's cells run in one worker: two workers cannot share one backend's 20 s."""
    slow, quick = cells(4, "tf.eager"), cells(4, "numpy")
    last = {**{c: 5.0 for c in slow}, **{c: 0.5 for c in quick}}.get
    planned = slow + quick
    assert time_left(planned, [], last, jobs=2) == pytest.approx(20.0)
    assert naive(planned, last, jobs=2) == pytest.approx(11.0)  # the old estimate
    assert time_left(planned, [], last, jobs=1) == pytest.approx(22.0)
    even = cells(4, "a") + cells(4, "b")
    assert time_left(even, [], lambda c: 5.0, jobs=2) == pytest.approx(20.0)


def test_a_running_cell_is_charged_what_is_left_of_it():
    planned = cells(2)
    last = lambda cell: 10.0  # noqa: E731
    assert time_left(planned, [], last, running={planned[0]: 4.0}) == pytest.approx(16.0)
    assert time_left(planned, [], last, running={planned[0]: 40.0}) == pytest.approx(10.0)


# --- the workers' stderr -----------------------------------------------------------------------

#: as TensorFlow 2.21 prints them, once per library that holds a copy of absl, in each worker
TF_BANNER = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796530318.394638    7451 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.\n"
    "E0000 00:00:1796530357.321696    7936 node_def_util.cc:682] NodeDef mentions attribute "
    "use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset; "
    "signature=input_dataset:variant> This may be expected if your graph generating binary is "
    "newer than this binary.\n"
)


def test_banners_are_dropped_and_everything_else_passed_on():
    from equiv.running.workers import StderrRelay, is_banner

    assert all(is_banner(line) for line in TF_BANNER.splitlines())
    for line in (
        "E0000 00:00:1796530357.321696    7936 some_kernel.cc:12] Check failed: x == y",
        "Traceback (most recent call last):",
        "UserWarning: oneDNN custom operations are on",  # not TF's own line
    ):
        assert not is_banner(line)
    read, write = os.pipe()
    lines: list[str] = []
    relay = StderrRelay(read, lines.append)
    relay.start()
    os.write(write, (TF_BANNER + "a real line\r\nWARNING: something").encode())
    os.write(write, b" else, and no newline before the end")
    os.close(write)
    relay.join(10)
    assert lines == ["a real line", "WARNING: something else, and no newline before the end"]


NOISY_IMPL = """
import os
os.write(2, {banner!r})
os.write(2, b"said by the worker\\n")
if os.environ.get("EQUIV_TEST_DIE"):
    os.write(2, b"its last words\\n")
    os._exit(3)
"""


@pytest.mark.parametrize("die", [False, True], ids=["lives", "dies"])
def test_a_workers_banners_never_reach_the_terminal(tmp_path, monkeypatch, capfd, die):
    """The worker's fd 2 goes through the parent, which drops the banners; what a worker says
    as it dies arrives, before its cell's result."""
    from equiv.backends.implementations import ImplSource
    from equiv.running.runner import RunOptions
    from equiv.running.workers import Group, WorkerPool

    (tmp_path / "equiv_noisy_impl.py").write_text(
        textwrap.dedent(NOISY_IMPL).format(banner=TF_BANNER.encode())
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # a spawned worker starts with this sys.path
    if die:
        monkeypatch.setenv("EQUIV_TEST_DIE", "1")
    events: list[str] = []
    lock = threading.Lock()

    def output(line: str) -> None:
        with lock:
            events.append(line)

    options = RunOptions.verdict_only(steps=1, timeout_s=120)
    pool = WorkerPool(options, on_output=output)
    job = (Cell("two_layer_mlp", "numpy", "float64"), ImplSource("equiv_noisy_impl"))
    for result in pool.run([Group([job])]):
        with lock:
            events.append(f"result: {result.status}")
    err = capfd.readouterr().err
    assert "oneDNN" not in err and "absl::InitializeLog" not in err
    assert not any("oneDNN" in e or "use_unbounded_threadpool" in e for e in events)
    assert "said by the worker" in events
    assert events[-1] == "result: error"  # the module is no implementation, or it died
    if die:  # its last words, before its cell's result
        assert events.index("its last words") < events.index("result: error")


# --- the workers' environment ------------------------------------------------------------------


def test_tensorflow_logging_is_quiet_unless_the_user_says_otherwise():
    from equiv.backends.registry import all_backends
    from equiv.backends.tensorflow import logging_defaults

    assert logging_defaults({}) == {"TF_CPP_MIN_LOG_LEVEL": "2"}
    assert logging_defaults({"TF_CPP_MIN_LOG_LEVEL": "0"}) == {}  # the user's own, kept
    for variables in (logging_defaults({}), *(b.worker_env for b in all_backends().values())):
        assert "TF_ENABLE_ONEDNN_OPTS" not in variables  # numerics, not logging: never set
    # a worker imposes worker_env over the user's environment: no logging variable there
    for backend in all_backends().values():
        assert "TF_CPP_MIN_LOG_LEVEL" not in backend.worker_env, backend.id


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("tensorflow") is None, reason="needs tensorflow"
)
@pytest.mark.parametrize("user_level", [None, "0"])
def test_a_tensorflow_worker_keeps_the_users_log_level(tmp_path, monkeypatch, user_level):
    """A real TF worker: the log level is 2 where the user set none, theirs where they did."""
    if user_level is None:
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", user_level)
    (tmp_path / "equiv_env_impl.py").write_text(
        "import os\n"
        "with open(os.environ['EQUIV_TEST_OUT'], 'w') as f:\n"
        "    f.write(os.environ.get('TF_CPP_MIN_LOG_LEVEL', 'unset'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("EQUIV_TEST_OUT", str(tmp_path / "level"))
    from equiv.backends.implementations import ImplSource
    from equiv.backends.registry import all_backends
    from equiv.running.runner import RunOptions
    from equiv.running.workers import Group, WorkerPool

    backend = all_backends()["keras.tensorflow"]
    job = (Cell("two_layer_mlp", backend.id, "float32"), ImplSource("equiv_env_impl"))
    seen: list[str] = []
    pool = WorkerPool(RunOptions.verdict_only(steps=1), on_output=seen.append)
    list(pool.run([Group([job], dict(backend.worker_env), backend.worker_hides)]))
    assert (tmp_path / "level").read_text() == (user_level or "2")
    assert not any("oneDNN" in line for line in seen)
