"""Progress while running: on a terminal, a line per cell cut to its width below which a status
line is redrawn; in CI logs and pipes, one plain line per finished cell."""

from __future__ import annotations

import io
import re

import pytest

from equiv.cli.progress import Progress
from equiv.contract.records import Cell, CellResult

EXPLAINED = (
    "Keras's Adam uses the 'epsilon hat' form of the Adam paper: epsilon is added to sqrt(v) "
    "before bias correction, i.e. Adam with eps * sqrt(1 - beta_2^t). Proof: the reference "
    "variant {'optimizer': 'adam_epsilon_hat'} matches (max 0.14 of tolerance over 3 steps) "
    "where the reference does not (first divergence at step 0, params w1 (update): error "
    "6.5e-05 > tolerance 1.39e-05)"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def results() -> list[CellResult]:
    return [
        CellResult(cell=Cell("mlp", "numpy", "float64"), status="pass", duration_s=0.5),
        CellResult(
            cell=Cell("mlp", "torch.jit", "float64"),
            status="fail",
            reason="first divergence at step 3, grads w1",
            duration_s=1.0,
        ),
    ]


def plain(text: str) -> list[str]:
    """What a terminal shows of ``text``: its lines, without escape sequences and redraws."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return [line.rsplit("\r", 1)[-1] for line in text.split("\n")]


def cursor_visible(text: str) -> bool:
    """Whether ``text`` leaves the cursor shown: even a run killed with SIGKILL, which no
    code of its own can follow, must not leave it hidden."""
    return text.rfind("\x1b[?25l") < text.rfind("\x1b[?25h") or "\x1b[?25l" not in text


def on_a_fresh_line(text: str) -> bool:
    """Whether what comes next (the summary, the shell's prompt) starts a line of its own."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).endswith("\n")


def test_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    first, second = results()
    with Progress([first.cell, second.cell], out=out) as progress:
        assert progress.live is False
        for r in (first, second):
            progress.start(r.cell)
            progress.finish(r)
    assert out.getvalue().splitlines() == [
        "[1/2] mlp-numpy-float64: pass (0.5s); ~1s left",  # no history: as the cells so far
        "[2/2] mlp-torch.jit-float64: fail (1.0s) - first divergence at step 3, grads w1",
    ]


def test_plain_lines_are_short_but_not_cut_to_a_width(monkeypatch):
    """A CI log has no width: the first clause of the reason, whole, whatever COLUMNS says."""
    monkeypatch.setenv("COLUMNS", "40")
    cell = Cell("keras_sequential_adam", "keras.tensorflow", "float32")
    result = CellResult(cell=cell, status="explained", reason=EXPLAINED, duration_s=0.6)
    out = io.StringIO()
    with Progress([cell], out=out) as progress:
        progress.finish(result)
    assert out.getvalue() == (
        "[1/1] keras_sequential_adam-keras.tensorflow-float32: explained (0.6s) - Keras's Adam "
        "uses the 'epsilon hat' form of the Adam paper...\n"
    )
    verbose = io.StringIO()
    with Progress([cell], out=verbose, verbose=True) as progress:
        progress.finish(result)
    assert verbose.getvalue().endswith(f"explained (0.6s) - {EXPLAINED}\n")


def test_a_terminal_gets_a_line_per_cell_within_its_width_and_a_status_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("TERM", raising=False)
    term = Terminal()
    first, second = results()
    explained = CellResult(
        cell=Cell("keras_sequential_adam", "keras.tensorflow", "float64"),
        status="explained",
        reason=EXPLAINED,
        duration_s=1.1,
    )
    cells = [first.cell, second.cell, explained.cell]
    with Progress(cells, out=term) as progress:
        assert progress.live is True
        for r in (first, second, explained):
            progress.start(r.cell)
            progress.finish(r)
    lines = [line for line in plain(term.getvalue()) if line.strip()]
    kept = [line for line in lines if line.startswith("[") and "/3]" in line]
    assert kept[:2] == [
        "[1/3] mlp-numpy-float64: pass (0.5s); ~1s left",
        "[2/3] mlp-torch.jit-float64: fail (1.0s) - first divergence at step 3…; ~1s left",
    ]
    # no room left for a useful piece of the reason in 80 columns: none rather than a stub
    assert kept[2] == "[3/3] keras_sequential_adam-keras.tensorflow-float64: explained (1.1s)"
    assert all(len(line) <= 80 for line in lines)
    assert re.search(r"\[#+\] 3/3 \S+  1 explained 1 fail 1 pass", lines[-1])  # the status line
    assert cursor_visible(term.getvalue()) and on_a_fresh_line(term.getvalue())


def test_the_terminal_is_left_as_it_was_when_the_run_is_interrupted(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("TERM", raising=False)
    term = Terminal()
    first, _ = results()
    with pytest.raises(KeyboardInterrupt), Progress([first.cell], out=term) as progress:
        progress.start(first.cell)
        raise KeyboardInterrupt
    assert cursor_visible(term.getvalue()) and on_a_fresh_line(term.getvalue())


def test_dumb_terminal_gets_plain_lines(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    assert Progress([], out=Terminal()).live is False


def test_the_status_line_shows_each_running_cell_with_its_phase_and_the_time_left():
    first, second = results()
    estimates = {first.cell: 60.0, second.cell: 180.0}
    progress = Progress([first.cell, second.cell], last=estimates.get, jobs=2, out=io.StringIO())
    progress.start(first.cell)
    progress.start(second.cell)
    progress.phase(second.cell, "calibration")
    line = progress.status_line(200)
    assert "mlp-numpy-float64, mlp-torch.jit-float64 (calibration)" in line
    assert "~3.0m left" in line  # the 180 s cell: a worker each, just started
    assert len(progress.status_line(50)) < 50


def test_plain_lines_say_the_time_left():
    out = io.StringIO()
    first, second = results()
    progress = Progress([first.cell, second.cell], last=lambda cell: 20.0, out=out)
    progress.start(first.cell)
    progress.finish(first)
    progress.start(second.cell)
    progress.finish(second)
    lines = out.getvalue().splitlines()
    assert re.search(r"; ~\d+s left$", lines[0]) and not lines[1].endswith("left")


def test_cells_skipped_before_they_start_say_nothing_about_the_time_left():
    """A backend that is not installed skips its cells at once, 0 s each: the cells that ran
    set the pace for the backends not started yet, not those zeros."""
    missing = CellResult(cell=Cell("mlp", "jax.jit", "float64"), status="skip", reason="no jax")
    ran = CellResult(cell=Cell("mlp", "numpy", "float64"), status="pass", duration_s=4.0)
    pending = [Cell("mlp", "numpy", "float32"), Cell("mlp", "torch.jit", "float64")]
    progress = Progress([missing.cell, ran.cell, *pending], out=io.StringIO())
    progress.finish(missing)
    progress.start(ran.cell)
    progress.finish(ran)
    assert progress.time_left() == pytest.approx(8.0)


def test_a_workers_line_is_printed_whole(monkeypatch, capsys):
    """A worker's stderr (a traceback, a framework's error) is not cut to the width."""
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.delenv("TERM", raising=False)
    said = "RuntimeError: " + "x" * 80
    term = Terminal()
    with Progress([], out=term) as progress:
        progress.worker_output(said)
    assert said in "".join(plain(term.getvalue()))
    with Progress([], out=io.StringIO()) as progress:
        progress.worker_output(said)
    assert capsys.readouterr().err == said + "\n"  # a CI log: the run's own stderr
