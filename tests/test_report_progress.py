"""Progress while running: a redrawn bar on a terminal, plain lines in CI logs."""

from __future__ import annotations

import io
import re

from equiv.contract.records import Cell, CellResult
from equiv.running.matrix import Progress


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


def test_plain_lines_when_not_a_terminal():
    lines: list[str] = []
    stream = io.StringIO()
    progress = Progress(total=2, emit=lines.append, stream=stream)
    assert progress.bar is False
    for r in results():
        progress.start(r.cell)
        progress.finish(r)
    assert lines == [
        "[1/2] mlp-numpy-float64: pass (0.5s)",
        "[2/2] mlp-torch.jit-float64: fail (1.0s) - first divergence at step 3, grads w1",
    ]
    assert stream.getvalue() == ""


def test_bar_on_a_terminal_names_the_running_cell_and_keeps_problems():
    lines: list[str] = []
    term = Terminal()
    progress = Progress(total=2, emit=lines.append, stream=term)
    assert progress.bar is True
    first, second = results()
    progress.start(first.cell)
    assert "running mlp-numpy-float64" in term.getvalue().rsplit("\r", 1)[-1]
    progress.finish(first)
    progress.start(second.cell)
    progress.finish(second)
    out = term.getvalue()
    assert lines == []  # nothing on stdout: the bar and kept lines go to the terminal
    assert re.search(r"\[#+\] 2/2 ", out) and "1 fail 1 pass" in out  # full bar, tally
    # the failure is kept on its own line; the pass is not
    kept = [line.rsplit("\r", 1)[-1] for line in out.split("\n")]
    assert "[2/2] mlp-torch.jit-float64: fail (1.0s) - first divergence at step 3, grads w1" in [
        k.replace("\x1b[K", "") for k in kept
    ]
    assert not any("mlp-numpy-float64: pass" in k for k in kept)
    assert out.endswith("\n")  # the shell prompt starts on a fresh line


def test_dumb_terminal_gets_plain_lines(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    assert Progress(total=1, stream=Terminal()).bar is False


def test_the_bar_shows_each_running_cell_with_its_phase_and_the_time_left(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    term = Terminal()
    first, second = results()
    estimates = {first.cell: 60.0, second.cell: 180.0}
    progress = Progress(
        total=2, stream=term, planned=[first.cell, second.cell], estimate=estimates.get, jobs=2
    )
    progress.start(first.cell)
    progress.start(second.cell)
    progress.phase(second.cell, "calibration")
    line = term.getvalue().rsplit("\r", 1)[-1]
    assert "mlp-numpy-float64, mlp-torch.jit-float64 (calibration)" in line
    assert "~2.0m left" in line  # (60 + 180) s of work over 2 workers, just started
    progress.finish(first)
    assert "~1.5m left" in term.getvalue().rsplit("\r", 1)[-1]  # the 180 s cell, over 2


def test_plain_lines_say_the_time_left():
    lines: list[str] = []
    first, second = results()
    progress = Progress(
        total=2,
        emit=lines.append,
        stream=io.StringIO(),
        planned=[first.cell, second.cell],
        estimate=lambda cell: 20.0,
    )
    progress.start(first.cell)
    progress.finish(first)
    progress.start(second.cell)
    progress.finish(second)
    assert lines[0].endswith("; ~20s left") and not lines[1].endswith("left")
