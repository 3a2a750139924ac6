"""parity.html: rendered from the JSON alone, every status shown, self-contained, atomic."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from equiv.contract.records import Cell, CellResult
from equiv.report.plotdata import unpack
from equiv.report.render import render_html, write_report
from equiv.results.document import build_document

FIXTURE = Path(__file__).parent / "fixtures" / "report" / "parity_mixed.json"
sys.path.insert(0, str(FIXTURE.parent))
from full_run import CASES, full_run_document  # noqa: E402


class Cells(HTMLParser):
    """The matrix squares (status per cell id), the details' ids and open state."""

    def __init__(self) -> None:
        super().__init__()
        self.matrix: dict[str, str] = {}
        self.details: dict[str, bool] = {}
        self.scripts_with_src: list[str] = []
        self.stylesheets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and "cell" in (a.get("class") or "").split() and a.get("data-cell"):
            self.matrix[a["data-cell"]] = a.get("data-status") or ""
        if tag == "details" and "cell-detail" in (a.get("class") or ""):
            self.details[a["id"] or ""] = "open" in a
        if tag == "script" and a.get("src"):
            self.scripts_with_src.append(a["src"] or "")
        if tag == "link" and a.get("rel") == "stylesheet":
            self.stylesheets.append(a.get("href") or "")


def parse(html: str) -> Cells:
    parser = Cells()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def html(document) -> str:
    return render_html(document)


def test_fixture_holds_every_status(document):
    statuses = {c["status"] for c in document["cells"]}
    assert statuses == {"pass", "fail", "error", "timeout", "skip", "explained"}


def test_matrix_has_every_cell_with_its_status(document, html):
    page = parse(html)
    assert page.matrix == {c["id"]: c["status"] for c in document["cells"]}
    for status, count in document["summary"].items():
        if status != "total":
            assert f'data-count="{status}">{count}<' in html or count == 0


def test_headline_counts(html):
    assert "5 of 15 cells that ran do not agree: 2 fail, 2 error, 1 timeout. 5 skipped." in html


def test_failing_cell_says_step_quantity_and_parameter(document, html):
    cell = next(c for c in document["cells"] if c["id"] == "two_layer_mlp-torch.eager-float32")
    div = cell["first_divergence"]
    assert (div["step"], div["quantity"], div["name"], div["phase"]) == (
        1,
        "grads",
        "w1",
        "backward",
    )
    assert "step 1 · grads/w1" in html  # in the matrix square
    assert "step 1: gradient of w1 (backward)" in html  # in the details' summary
    assert cell["localization"]["diagnosis"] in unescape(html)


def test_details_open_for_problems_only(document, html):
    details = parse(html).details
    assert len(details) == len(document["cells"])
    for cell in document["cells"]:
        anchor = "cell-" + cell["id"]
        assert details[anchor] == (cell["status"] not in ("pass", "skip")), cell["id"]


def test_error_shows_reason_and_folds_the_traceback(document, html):
    cell = next(c for c in document["cells"] if c["traceback"])
    assert "RuntimeError: planted: no backward" in html
    folded = re.search(
        r'<details class="traceback"><summary>traceback</summary><pre>(.*?)</pre>', html, re.S
    )
    assert folded and "Traceback (most recent call last)" in folded.group(1)
    assert cell["traceback"].splitlines()[-1].strip() in folded.group(1)


def test_skip_and_timeout_reasons(html):
    assert "<b>Skipped:</b> tensorflow is not installed" in html
    assert "<b>Timed out:</b> no result within 900 s; the worker was killed" in html


def test_warnings_traces_and_explanation(html):
    warnings = re.search(r'<div class="warnings">(.*?)</div>', html, re.S)
    assert warnings and "retraced on every step: 30 traces" in warnings.group(1)
    assert "<tr><th>traces / compiles</th><td>30 in 30 steps</td></tr>" in html
    assert "— (not a compiled mode)" in html
    assert "yes: the variant matches where the reference does not" in html


def test_an_explanation_at_a_narrower_precision_says_so(document):
    doc = copy.deepcopy(document)
    cell = next(c for c in doc["cells"] if c["status"] == "explained")
    cell["explanation"]["variant"] = {"compute_dtype": "float32"}
    page = render_html(doc)
    assert "held to float32 precision" in page
    assert f"it is not {cell['dtype']}-exact" in page
    assert "held to float32" not in render_html(document)


def plot_data(html: str) -> dict:
    packed = re.search(
        r'<script type="application/gzip" id="equiv-plot-data">([^<]*)</script>', html
    )
    assert packed, "no packed plot data in the page"
    return unpack(packed.group(1))


def test_plots_are_drawn_from_packed_data_for_every_cell_that_ran(document, html):
    data = plot_data(html)
    hosts = re.findall(r'data-plot="(\w+)" data-plot-for="([^"]+)"', html)
    assert hosts and all(kind in data[anchor] for kind, anchor in hosts)
    assert len(hosts) == len(set(hosts))
    with_series = {"cell-" + c["id"] for c in document["cells"] if c["series"]}
    assert {a for kind, a in hosts if kind == "errors"} == with_series
    assert {a for a, entry in data.items() if "errors" in entry} == with_series
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    # the page's script and the library it draws with are inline; no SVG is left
    assert "uPlot" in html and 'data-plot="branches"' in html and "<svg" not in html


def test_plot_data_of_a_failing_cell(document, html):
    cell = next(c for c in document["cells"] if c["id"] == "two_layer_mlp-torch.eager-float32")
    errors = plot_data(html)["cell-" + cell["id"]]["errors"]
    assert errors["step"] == cell["series"]["step"] and errors["div"] == 1
    grads = next(g for g in errors["groups"] if g["title"] == "gradients")
    name, error, tolerance, over = next(q for q in grads["q"] if q[0] == "w1")
    assert over[0] == 1 and all(error[i] > tolerance[i] for i in over)
    raw = cell["series"]["grads/w1"]["error"]
    assert error == [float(f"{v:.3g}") for v in raw]


def test_a_resynchronised_cell_says_how_its_steps_were_compared():
    """Free-running up to step 2, resynchronised from there: in the overview, the details and
    the plot (a line at step 2); a cell that ran free has none of it."""
    resynced = CellResult(Cell("resnet18", "torch.eager", "float32"), "pass", steps=6)
    resynced.compared_steps, resynced.resynchronised_from = 6, 2
    resynced.series = {
        "step": list(range(6)),
        "loss": {"error": [1e-7] * 6, "tolerance": [1e-5] * 6},
    }
    free = CellResult(Cell("resnet18", "torch.eager", "float64"), "pass", steps=6)
    free.compared_steps = 6
    free.series = resynced.series
    html = render_html(build_document([resynced, free], {}, {}))
    assert html.count('<span class="resync-mark"') == 1 + 1  # the cell's, and the legend's
    assert "steps 0&ndash;1 free-running, from step 2 on resynchronised" in html
    data = plot_data(html)
    assert data["cell-resnet18-torch.eager-float32"]["errors"]["resync"] == 2
    assert data["cell-resnet18-torch.eager-float64"]["errors"]["resync"] is None


def test_a_full_run_page_is_at_most_3_mb():
    """Issue 10: a full run's page (156 cells) was 21 MB of inline SVG; now at most 3 MB."""
    document = full_run_document()
    page = render_html(document)
    assert len(page.encode("utf-8")) <= 3_000_000
    parsed = parse(page)
    assert len(parsed.matrix) == len(parsed.details) == 156
    cells = sum(bool(c["series"] or c["branches"]) for c in document["cells"])
    assert len(plot_data(page)) == cells + len(CASES)  # and a step-time plot per case


def test_branch_trace_and_benchmarks(document, html):
    assert "Branch trace" in html and "took w2a, reference w2b" in html
    assert "1.00× fastest" in html and "GFLOP/s" in html
    bench = plot_data(html)["speed-two_layer_mlp"]["bench"]
    timed = [
        c
        for c in document["cells"]
        if c["case"] == "two_layer_mlp" and (c["benchmark"] or {}).get("median_s")
    ]
    assert len(bench["label"]) == len(timed) and set(bench["dtype"]) == {"float64", "float32"}
    fastest = min(c["benchmark"]["median_s"] for c in timed if c["dtype"] == "float64")
    assert bench["median"][0] == float(f"{fastest:.3g}")  # fastest first, float64 first
    assert 'data-plot="bench" data-plot-for="speed-two_layer_mlp"' in html


def test_self_contained(html):
    page = parse(html)
    assert not page.scripts_with_src and not page.stylesheets
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", html)
    assert "@import" not in html


def test_renders_a_minimal_or_odd_document():
    odd = {
        "case": "c",
        "backend": "b",
        "dtype": "float32",
        "status": "weird",
        "max_ratio": {"loss": "inf"},
        "series": {"step": [0, 1], "loss": {"error": [0, "nan"]}},
        "first_divergence": {"step": 3},
        "branches": {"reference": ["a"]},
        "benchmark": 5,
        "note": {"from": "a plugin"},
    }
    minimal = {"case": "c", "backend": "b", "dtype": "float64", "status": "pass"}
    out = render_html({"schema": "equiv.parity/1", "cells": [minimal, odd]})
    assert 'data-status="unknown"' in out and "∞× tol" in out and "a plugin" in out


def _result(case: str, status: str, **kw) -> CellResult:
    return CellResult(cell=Cell(case, "numpy", "float64"), status=status, steps=2, **kw)


def test_trajectory_links_relative_to_the_page(tmp_path):
    results = [_result("a", "pass"), _result("b", "skip", reason="nope")]
    doc = build_document(results, {"seed": 0}, {"steps": 2})
    folder = tmp_path / "trajectories"
    folder.mkdir()
    np.savez(folder / "a__numpy__float64.npz", losses=np.zeros(2))
    write_report(tmp_path, doc)
    page = (tmp_path / "parity.html").read_text()
    assert 'href="trajectories/a__numpy__float64.npz"' in page
    other = tmp_path / "elsewhere"
    write_report(other, doc, json_dir=tmp_path)
    assert 'href="../trajectories/a__numpy__float64.npz"' in (other / "parity.html").read_text()


def test_every_run_writes_parity_html(tmp_path):
    from equiv.running.output import write_outputs
    from equiv.running.runner import RunOptions

    results = [_result("a", "pass"), _result("b", "error", reason="boom", traceback="Traceback")]
    paths = write_outputs(tmp_path, results, RunOptions(steps=2), argv=["equiv", "run"])
    assert paths == [tmp_path / "parity.json", tmp_path / "parity.html"]
    assert "boom" in (tmp_path / "parity.html").read_text()


def test_interrupted_write_keeps_the_old_page_whole(tmp_path, monkeypatch):
    import equiv.results.document

    doc = build_document([_result("a", "pass")], {}, {})
    write_report(tmp_path, doc)
    before = (tmp_path / "parity.html").read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(equiv.results.document.os, "replace", interrupted)
    changed = build_document([_result("a", "fail", reason="new")], {}, {})
    with pytest.raises(KeyboardInterrupt):
        write_report(tmp_path, changed)
    assert (tmp_path / "parity.html").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parity.html"]


def test_interrupted_render_replaces_neither_file(tmp_path, monkeypatch):
    import equiv.report.render
    from equiv.running.output import write_outputs
    from equiv.running.runner import RunOptions

    write_outputs(tmp_path, [_result("a", "pass")], RunOptions(steps=2), argv=["equiv"])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert set(before) == {"parity.json", "parity.html"}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(equiv.report.render, "render_html", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_outputs(tmp_path, [_result("a", "fail")], RunOptions(steps=2), argv=["equiv"])
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before


def test_report_imports_no_framework(tmp_path, document):
    small = copy.deepcopy(document)
    small["cells"] = small["cells"][:3]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(small))
    code = (
        "import sys; from equiv.cli.main import main;"
        f"rc = main(['report', {str(path)!r}, '--out', {str(tmp_path / 'out')!r}]);"
        # nor matplotlib: the page's plots are drawn by the browser
        "bad = [m for m in ('torch', 'tensorflow', 'jax', 'keras', 'matplotlib')"
        " if m in sys.modules];"
        "print('IMPORTED', bad); sys.exit(rc or (1 if bad else 0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "out" / "parity.html").exists()


def test_quantities_not_observed_are_shown_as_such_and_never_as_compared():
    from equiv.contract.records import Cell, CellResult
    from equiv.results.document import build_document

    why = "model.fit computes and applies the gradients inside its train step"
    result = CellResult(Cell("minibatch", "keras.fit", "float32"), "pass", steps=10)
    result.compared_steps = 10
    result.max_error = {"loss": 1e-8, "params": 2e-8}
    result.max_ratio = {"loss": 0.1, "params": 0.2}
    result.not_observed = {"grads": why}
    html = render_html(build_document([result], {}, {}))
    assert ">gradients not observed</span>" in html  # in the overview's cell
    assert f"not observed: {why}" in html  # in the cell's error table, in place of numbers
    assert '<th>gradients</th><td class="num">' not in html


def test_a_failing_cell_shows_its_layer_drill_down_and_batchnorm_statistics(document):
    """A cell with ``layers`` and ``state`` (resnet18's) names its first layer out of tolerance
    with the layers before it, and tables its BatchNorm statistics; other cells show neither."""
    doc = copy.deepcopy(document)
    cell = next(c for c in doc["cells"] if c["status"] == "fail")
    cell["layers"] = {
        "step": 0,
        "first_layer": "layer2.0.bn1",
        "agreeing": ["conv1", "bn1"],
        "layers": [
            {"layer": "conv1", "error": 1e-16, "tolerance": 1e-13, "ratio": 0.001},
            {"layer": "bn1", "error": 1e-15, "tolerance": 1e-13, "ratio": 0.01},
            {"layer": "layer2.0.bn1", "error": 1.8e-3, "tolerance": 7.6e-14, "ratio": 2.4e10},
        ],
    }
    cell["state"] = {
        "bn1.running_var": {"max_ratio": 0.5, "step": 1, "error": 1e-15, "tolerance": 2e-15},
        "layer2.0.bn1.running_var": {
            "max_ratio": 3e9,
            "step": 0,
            "error": 1e-4,
            "tolerance": 3e-14,
        },
    }
    page = unescape(re.sub("<[^>]+>", "", render_html(doc)))
    assert "the first layer out of tolerance is layer2.0.bn1; the 2 layers before it agree" in page
    assert "2 quantities, largest error 3.0e+09× tolerance" in page
    assert "Layer by layer" not in unescape(re.sub("<[^>]+>", "", render_html(document)))


def _explained_cell(**overrides) -> dict:
    """An explained cell as a run writes it: 4.2e14 tolerances off the plain reference from
    step 1 (the declared difference), 0.31 of a tolerance off the variant that explains it."""
    cell = {
        "case": "keras_sequential_adam",
        "backend": "keras.jax",
        "dtype": "float64",
        "id": "keras_sequential_adam-keras.jax-float64",
        "status": "explained",
        "reason": "Keras applies Adam's epsilon in the 'epsilon hat' form. Proof: ...",
        "steps": 10,
        "compared_steps": 2,
        "max_error": {"loss": 1e-9, "params": 1e-3},
        "max_ratio": {"loss": 3.0, "params": 4.2e14},
        "first_divergence": {
            "step": 1,
            "quantity": "params",
            "name": "w1",
            "phase": "update",
            "error": 1e-3,
            "tolerance": 2.4e-18,
        },
        "explanation": {
            "reason": "Keras applies Adam's epsilon in the 'epsilon hat' form",
            "variant": {"adam_epsilon_hat": True},
            "proved": True,
            "reference": {"max_ratio": {"loss": 3.0, "params": 4.2e14}, "first_divergence": None},
            "variant_result": {
                "max_ratio": {"loss": 0.1, "params": 0.31},
                "max_error": {"loss": 1e-12, "params": 1e-16},
                "compared_steps": 10,
                "first_divergence": None,
            },
        },
    }
    return {**cell, **overrides}


def square(html: str, cell_id: str) -> str:
    """The text of a cell's square in the overview, tags dropped."""
    found = re.search(
        rf'<td class="cell[^"]*"[^>]*data-cell="{re.escape(cell_id)}".*?</td>', html, re.S
    )
    assert found, cell_id
    return " ".join(unescape(re.sub("<[^>]+>", " ", found.group(0))).split())


def test_an_explained_cell_shows_its_error_against_the_variant():
    """Papercut 5: an explained cell's one number is how close it is to the variant that
    explains it, said so; the plain reference's 4.2e+14 stays in its details."""
    cell = _explained_cell()
    html = render_html({"schema": "equiv.parity/1", "cells": [cell]})
    shown = square(html, cell["id"])
    assert "0.31× tol vs variant" in shown
    assert "4.2e+14" not in shown
    assert "differs from reference at step 1 · params/w1" in shown
    page = " ".join(unescape(re.sub("<[^>]+>", " ", html)).split())
    assert "largest error 0.31× tolerance against the variant" in page  # the details' summary
    assert "against the reference largest error 4.2e+14× tolerance" in page  # the proof's table
    assert "Largest error against the plain reference" in page
    # hovering the number says what the other one is
    assert re.search(r'<span class="ratio" title="[^"]*plain reference: 4\.2e\+14× tolerance', html)


def test_only_an_explained_cell_is_shown_against_its_variant():
    """A failing cell whose declared difference did not prove it, and an explained cell of an
    older document without the variant's ratios, show the plain reference's number unlabelled."""
    unproved = _explained_cell(status="fail", id="a")
    unproved["explanation"] = {**unproved["explanation"], "proved": False}
    old = _explained_cell(id="b", case="other")
    old["explanation"] = {"reason": "x", "variant": "odd", "variant_result": {"max_ratio": "?"}}
    html = render_html({"schema": "equiv.parity/1", "cells": [unproved, old]})
    for cid in ("a", "b"):
        assert "4.2e+14× tol" in square(html, cid) and "variant" not in square(html, cid)


def test_a_diagnosed_cell_shows_its_causes_and_the_declaration(document):
    """A failing cell's ``diagnosis`` (docs/verdicts.md, Diagnosis): each known difference
    found, with its sources and what the variant does without it, and the declaration."""
    from equiv.catalogue import entry
    from equiv.checking.causes import Diagnosis, Member
    from equiv.contract.divergence import Divergence

    doc = copy.deepcopy(document)
    cell = next(c for c in doc["cells"] if c["id"] == "two_layer_mlp-torch.eager-float32")
    without = Divergence(0, "params", "w1", "update", 3e-5, 1e-7)
    found = Diagnosis(
        "found",
        [Member(entry("keras.adam_epsilon"), {"epsilon": 1e-7}, without)],
        {},
        Divergence(0, "params", "w1", "update", 3e-5, 1e-7),
        proof="Proof: planted",
    )
    cell["diagnosis"] = found.to_json("torch.eager", "float32")
    page = unescape(render_html(doc))
    assert "Why, from the catalogue of known differences: found" in page
    assert "keras.adam_epsilon" in page and "keras/src/optimizers/adam.py" in page
    assert "without it: step 0: parameter after the update of w1" in page
    assert "variant={'epsilon': 1e-07}" in page  # the declaration to paste
    assert "Why, from the catalogue" not in render_html(document)
