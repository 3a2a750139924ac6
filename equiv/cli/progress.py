"""What ``equiv run`` prints while it runs: one line per finished cell, and on a terminal a
status line kept at the bottom.

Each cell's line fits a line of output: its status, time, the first clause of its reason
(the full reason is in the report, and printed with ``-v``) and the time left. On a terminal
(stdout a TTY, TERM not "dumb") the line is cut to the terminal's width, and rich
(``rich.live``) keeps a status line below the cells' lines: the bar, the tally, the time left
and the cells being run with their phase, redrawn in place; rich also restores the terminal
when the run ends, by Ctrl-C or a crash included. Elsewhere (CI logs, pipes, files) each line
is printed plain, once, in the short form but not cut to a width: a log has none, and a
grep for a cell's id or status finds it whole.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from equiv.contract.records import Cell, CellResult
from equiv.results.history import time_left

#: a reason's first clause ends at ": ", "; " or ". " at least this far in (so that a reason
#: like "ValueError: shapes (3,) and (4,) ..." is not cut to "ValueError")
MIN_CLAUSE = 20
#: the longest short reason (a reason without clauses can be hundreds of characters)
MAX_SHORT = 120
#: shorter than this, a reason left by the terminal's width is dropped, not shown as a stub
MIN_REASON = 12
_CLAUSE_END = re.compile(r"[:;.]\s")

STYLES = {
    "pass": "green",
    "fail": "bold red",
    "error": "bold red",
    "timeout": "bold red",
    "explained": "yellow",
    "skip": "dim",
}


def fmt_left(seconds: float) -> str:
    if seconds < 60:
        return f"~{max(1, round(seconds))}s left"
    return f"~{seconds / 60:.0f}m left" if seconds >= 600 else f"~{seconds / 60:.1f}m left"


def fmt_elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _cut(text: str, width: int, ellipsis: str) -> str:
    if len(text) <= width:
        return text
    return text[: max(0, width - len(ellipsis))] + ellipsis if width > len(ellipsis) else ""


def short_reason(reason: str, ellipsis: str = "...") -> str:
    """The reason's first clause (and first line), ending in ``ellipsis`` where cut."""
    text = " ".join(reason.split("\n", 1)[0].split())
    cut = text != " ".join(reason.split())
    for match in _CLAUSE_END.finditer(text):
        if match.start() >= MIN_CLAUSE:
            text, cut = text[: match.start()], True
            break
    if len(text) > MAX_SHORT:
        return _cut(text, MAX_SHORT, ellipsis)
    return text + ellipsis if cut else text


def cell_line(
    done: int,
    total: int,
    result: CellResult,
    left: str = "",
    *,
    width: int | None = None,
    verbose: bool = False,
    ellipsis: str = "...",
) -> tuple[str, tuple[int, int]]:
    """A finished cell's line, and where its status stands in it (to colour it).

    ``verbose``: the full reason. ``width``: the line is cut to it, the reason first (down to
    nothing), then the end of the line."""
    head = f"[{done}/{total}] {result.cell.id}: "
    status_at = (len(head), len(head) + len(result.status))
    head += f"{result.status} ({result.duration_s:.1f}s)"
    if result.caveats:  # a limit on what the status claims: as visible as the status
        head += f" [{', '.join(c.code for c in result.caveats)}]"
    reason = result.reason if result.status != "pass" else ""
    if reason and not verbose:
        reason = short_reason(reason, ellipsis)
    tail = f"; {left}" if left else ""
    if width is not None and len(head) + len(tail) + len(reason) + 3 > width and reason:
        room = width - len(head) - len(tail) - 3
        reason = _cut(reason, room, ellipsis) if room >= MIN_REASON else ""
    line = head + (f" - {reason}" if reason else "") + tail
    if width is not None:
        line = _cut(line, width, ellipsis)
    return line, status_at


def is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
    except ValueError:  # a closed stream
        return False


class Progress:
    """Prints the run's progress (``equiv.running.matrix.RunProgress``); a context manager
    that, on a terminal, shows the status line from entry to exit.

    The time left (``equiv.results.history.time_left``) starts from the history's durations
    (``last``: the cell's duration last time, or None; ``typical``: a duration for a cell
    with neither history nor finished cells like it) and learns from the cells this run
    finishes, spread over ``jobs`` workers."""

    def __init__(
        self,
        planned: Sequence[Cell],
        *,
        last: Callable[[Cell], float | None] = lambda cell: None,
        typical: float | None = None,
        jobs: int = 1,
        verbose: bool = False,
        out: IO[str] | None = None,
        live: bool | None = None,
    ) -> None:
        self.planned = list(planned)
        self.total = len(self.planned)
        self.last, self.typical, self.jobs = last, typical, jobs
        self.verbose = verbose
        self.out = out if out is not None else sys.stdout
        self.live = is_terminal(self.out) if live is None else live
        self.counts: dict[str, int] = {}
        self.began = time.monotonic()
        self.running: dict[Cell, tuple[float, str]] = {}
        self.ended: set[Cell] = set()
        #: (cell, seconds) of the finished cells that ran: what the time left learns from
        self.finished: list[tuple[Cell, float]] = []
        self._console: Any = None
        self._live: Any = None

    @property
    def done(self) -> int:
        return len(self.ended)

    # the display

    def __enter__(self) -> Progress:
        if self.live:
            try:
                from rich.console import Console
                from rich.live import Live
                from rich.text import Text
            except ImportError:  # an install that predates the dependency: plain lines
                self.live = False
                return self

            self._console = Console(file=self.out, highlight=False)

            def render() -> Text:
                try:
                    line = self.status_line(self._console.width)
                except Exception:  # never end rich's drawing thread; the next draw may do
                    line = f"{self.done}/{self.total}"
                return Text(line, no_wrap=True, overflow="crop")

            self._live = Live(console=self._console, refresh_per_second=2, get_renderable=render)
            try:
                self._live.start()
                # rich hides the cursor while live; a run killed with SIGKILL (out of memory)
                # could not show it again, so it stays shown, at the end of the status line
                self._console.show_cursor(True)
            except BaseException:  # Ctrl-C right then: no __exit__ follows
                self.__exit__()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()  # shows the cursor again and ends on a fresh line

    def _print(self, line: str, style_at: tuple[int, int], style: str) -> None:
        if self._console is None:
            print(line, file=self.out, flush=True)
            return
        from rich.text import Text

        text = Text(line, no_wrap=True, overflow="crop")
        if style:
            text.stylize(style, *style_at)
        self._console.print(text, soft_wrap=False, crop=True)

    def worker_output(self, line: str) -> None:
        """A line a worker wrote to its stderr: above the status line on a terminal, whole
        (a traceback's line is not cut to the width)."""
        if self._console is None:
            print(line, file=sys.stderr, flush=True)
            return
        from rich.text import Text

        self._console.print(Text(line, style="dim"), soft_wrap=True)

    # the run's events

    def start(self, cell: Cell) -> None:
        self.running[cell] = (time.monotonic(), "")

    def phase(self, cell: Cell, phase: str) -> None:
        began, _ = self.running.get(cell, (time.monotonic(), ""))
        self.running[cell] = (began, phase)

    def finish(self, result: CellResult) -> None:
        began = self.running.pop(result.cell, None)
        self.ended.add(result.cell)
        if began is not None or result.status != "skip":  # not a backend found missing at once
            # the wall time where the cell was seen to start: a timeout's record has no duration
            seconds = time.monotonic() - began[0] if began else result.duration_s
            self.finished.append((result.cell, max(seconds, result.duration_s)))
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        left = self.time_left() if self.done < self.total else None
        line, status_at = cell_line(
            self.done,
            self.total,
            result,
            fmt_left(left) if left else "",
            width=self._console.width if self._console is not None else None,
            verbose=self.verbose,
            ellipsis="…" if self._console is not None else "...",
        )
        self._print(line, status_at, STYLES.get(result.status, ""))

    def time_left(self) -> float | None:
        # copies first: the status line is drawn from rich's thread while cells finish
        now, running, finished = time.monotonic(), dict(self.running), list(self.finished)
        ended = set(self.ended)
        return time_left(
            [c for c in self.planned if c not in ended],
            finished,
            self.last,
            running={cell: now - began for cell, (began, _) in running.items()},
            jobs=self.jobs,
            typical=self.typical,
        )

    def status_line(self, width: int) -> str:
        """The bar, the count, the time so far and left, the tally and the cells running."""
        size = max(10, min(30, width // 4))
        filled = round(size * self.done / self.total) if self.total else size
        text = (
            f"[{'#' * filled}{'.' * (size - filled)}] {self.done}/{self.total} "
            f"{fmt_elapsed(time.monotonic() - self.began)}"
        )
        left = self.time_left() if self.done < self.total else None
        if left:
            text += f" {fmt_left(left)}"
        tally = " ".join(f"{n} {s}" for s, n in sorted(dict(self.counts).items()))
        if tally:
            text += f"  {tally}"
        running = [
            cell.id + (f" ({phase})" if phase else "")
            for cell, (_, phase) in dict(self.running).items()
        ]
        if running:
            text += "  running " + ", ".join(running)
        return _cut(text, max(1, width - 1), "…")
