"""Caveats: a verdict that claims less than its cell's name says (papercut 6). A compiled mode
that traced nothing may have run eagerly: its pass is a pass of eager code, and the report says
so in the overview and the problems list, not only among the cell's warnings."""

from __future__ import annotations

import re
from html import unescape

import pytest

from equiv.backends.implementations import ImplSource, Patch
from equiv.backends.registry import get_backend
from equiv.contract.records import NO_TRACE, Caveat, Cell, CellResult
from equiv.report.render import render_html
from equiv.running.runner import RunOptions, run_cell

#: two_layer_mlp's torch step with its forward pass hidden from dynamo, as dynamo hides what it
#: cannot compile (``nn.LSTM``): torch.compile then compiles nothing and the step runs eagerly
EAGER_UNDER_COMPILE = ImplSource(
    "cases.two_layer_mlp.torch_impl",
    (
        Patch(
            "def forward_loss(x, y, w1, w2):\n    y_pred",
            "def forward_loss(x, y, w1, w2):\n    return _eager(x, y, w1, w2)\n\n\n"
            "@torch.compiler.disable\ndef _eager(x, y, w1, w2):\n    y_pred",
        ),
    ),
)
MESSAGE = "a compiled mode recorded no trace (torch.compile: ...): it may have run eagerly"


def text(html: str) -> str:
    return " ".join(unescape(re.sub("<[^>]+>", " ", html)).split())


def _compile_cell(**overrides) -> dict:
    """A torch.compile cell that passed without a trace, as a run writes it."""
    cell = {
        "case": "lstm",
        "backend": "torch.compile",
        "dtype": "float32",
        "id": "lstm-torch.compile-float32",
        "status": "pass",
        "reason": "",
        "steps": 3,
        "compared_steps": 3,
        "coverage": 1.0,
        "max_error": {"loss": 1e-8},
        "max_ratio": {"loss": 0.2},
        "traces": 0,
        "warnings": [MESSAGE],
        "caveats": [{"code": NO_TRACE, "message": MESSAGE}],
    }
    return {**cell, **overrides}


def _plain_pass() -> dict:
    return _compile_cell(
        case="mlp", id="mlp-torch.compile-float32", traces=1, warnings=[], caveats=[]
    )


def problems(html: str) -> str:
    found = re.search(r'<table class="problems">.*?</table>', html, re.S)
    return found.group(0) if found else ""


def test_the_runner_records_a_compiled_mode_that_traced_nothing():
    if get_backend("torch.compile").availability():
        pytest.skip("needs torch")
    options = RunOptions.verdict_only(steps=3)
    cell = Cell("two_layer_mlp", "torch.compile", "float32")
    eager = run_cell(cell, options, impl=EAGER_UNDER_COMPILE)
    assert (eager.status, eager.traces) == ("pass", 0), eager.reason
    assert [c.code for c in eager.caveats] == [NO_TRACE]
    message = eager.caveats[0].message
    assert "recorded no trace" in message and "torch.compile" in message
    assert message in eager.warnings  # for readers that know only the warnings
    entry = eager.to_json()
    assert entry["status"] == "pass"  # a pass of eager code is still a correct result
    assert entry["caveats"] == [{"code": NO_TRACE, "message": message}]
    compiled = run_cell(cell, options)
    assert compiled.traces and compiled.caveats == [], compiled.warnings
    assert compiled.to_json()["caveats"] == []


def test_a_caveat_is_in_both_lists_of_a_result():
    result = CellResult(Cell("c", "torch.compile", "float32"), "pass")
    result.add_caveat(NO_TRACE, MESSAGE)
    assert result.caveats == [Caveat(NO_TRACE, MESSAGE)] and result.warnings == [MESSAGE]


def test_the_overview_and_the_problems_list_mark_a_pass_with_a_caveat():
    cell, plain = _compile_cell(), _plain_pass()
    html = render_html({"schema": "equiv.parity/1", "cells": [cell, plain]})
    square = re.search(rf'<td class="cell[^"]*"[^>]*data-cell="{cell["id"]}".*?</td>', html, re.S)
    assert square and 'data-status="pass"' in square.group(0)  # the verdict stays pass
    mark = re.search(r'<span class="caveat-mark"[^>]*title="([^"]*)">([^<]*)</span>', square[0])
    assert mark and unescape(mark.group(1)) == MESSAGE
    assert mark.group(2) == "⚠ no compiled trace"
    assert 'data-caveat="no_trace"' in square.group(0)  # report.css keeps it in view
    listed = problems(html)
    assert cell["id"] in listed and plain["id"] not in listed
    assert "no compiled trace" in listed and MESSAGE in text(listed)
    opened = rf'<details class="cell-detail[^"]*" id="cell-{cell["id"]}"[^>]* open>'
    assert re.search(opened, html)  # its details open, as a problem's do
    assert "1 cell carries a caveat on its verdict" in text(html)
    # shown once in the details, with its mark, not again among the warnings
    assert text(html).count(MESSAGE) == 2  # the problems list and the details
    assert '<div class="warnings">' not in html


def test_a_document_written_before_caveats_still_marks_an_untraced_compiled_mode():
    """No ``caveats`` field: ``traces`` 0 is the same caveat, with the old warning as its
    message; odd values of the field never stop the page."""
    old_warning = "a compiled mode recorded no trace: it may have run eagerly"
    old = _compile_cell(warnings=[old_warning])
    del old["caveats"]
    odd = [
        _compile_cell(id="x1", case="x1", caveats="no_trace"),
        _compile_cell(id="x2", case="x2", caveats=[5, None, {"code": 3}, {"message": "m"}]),
        _compile_cell(id="x3", case="x3", caveats=[], traces=0),  # a new document: no caveat
    ]
    html = render_html({"schema": "equiv.parity/1", "cells": [old, *odd]})
    listed = problems(html)
    assert old["id"] in listed and old_warning in text(listed)
    assert "x1" not in listed and "x3" not in listed
    assert "⚠ 3" in html and "⚠ caveat" in text(listed)  # x2: a code as it is; a bare message
