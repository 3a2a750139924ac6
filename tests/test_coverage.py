"""Coverage as a number (issue 15): every cell records the fraction of its steps it compared,
the document sums it over the cells that ran, and the report's overview marks every cell that
compared only part of its steps, so a comparison that stopped early is never a silent pass."""

from __future__ import annotations

from dataclasses import replace

from planted import OTHER_BRANCH

from equiv.contract.records import Cell, CellResult
from equiv.report.merge import merge_documents
from equiv.report.render import render_html
from equiv.results.document import build_document
from equiv.running.runner import RunOptions, run_cell

OPTIONS = RunOptions.verdict_only(steps=12)


def test_a_comparison_that_ends_early_is_partial_coverage():
    result = run_cell(Cell("dynamic_branching", "numpy", "float32"), OPTIONS, impl=OTHER_BRANCH)
    assert result.status == "fail" and result.first_divergence.quantity == "branch"
    assert result.compared_steps < result.steps
    assert result.coverage == result.compared_steps / result.steps < 1
    doc = build_document([result], {}, {})
    assert doc["coverage"]["partial"] == [result.cell.id]


def test_a_cell_that_compared_every_step_has_coverage_1_and_a_skip_none():
    whole = run_cell(Cell("two_layer_mlp", "numpy", "float64"), OPTIONS)
    assert whole.status == "pass" and whole.coverage == 1.0
    assert whole.to_json()["coverage"] == 1.0
    skipped = CellResult(Cell("two_layer_mlp", "x", "float64"), "skip", reason="not here")
    assert skipped.coverage is None


def partial_result() -> CellResult:
    result = CellResult(Cell("dynamic_branching", "numpy", "float32"), "pass", steps=500)
    result.compared_steps = 332
    result.warnings = ["numerically ambiguous branch at step 332: comparison stopped"]
    return result


def test_the_document_and_the_report_say_which_cells_compared_part_of_their_steps():
    whole = run_cell(Cell("two_layer_mlp", "numpy", "float64"), OPTIONS)
    partial = partial_result()
    doc = build_document([whole, partial], {}, {"steps": None})
    assert doc["coverage"] == {
        "compared_steps": 12 + 332,
        "steps": 12 + 500,
        "fraction": 344 / 512,
        "partial": ["dynamic_branching-numpy-float32"],
    }
    html = render_html(doc)
    assert "compared 332/500 steps" in html  # in the overview's cell
    assert 'class="cell s-pass partial"' in html
    assert "67.2%" in html and "1</b> cell compared only part of its steps" in html
    merged = merge_documents([("a.json", doc)])
    assert merged["coverage"] == doc["coverage"]


def test_a_run_that_compared_everything_says_so():
    doc = build_document([run_cell(Cell("two_layer_mlp", "numpy", "float32"), OPTIONS)], {}, {})
    assert doc["coverage"]["partial"] == [] and doc["coverage"]["fraction"] == 1.0
    html = render_html(doc)
    assert "every step of every cell that ran" in html
    marked = render_html(build_document([partial_result()], {}, {}))
    assert 'class="partial-mark"' not in html and 'class="partial-mark"' in marked


def test_an_explained_cell_is_covered_by_its_proven_variant():
    """Such a cell parts from the plain reference at once (it computes at another precision);
    its verdict rests on the variant, so the variant's steps are its coverage (found by the
    branching sweep: keras.torch float64 cells listed as partial with every step proven)."""
    from equiv.checking.verdict import ExplanationProof

    result = CellResult(Cell("static_graph_step", "keras.torch", "float64"), "explained")
    result.steps, result.compared_steps = 500, 346
    proof = dict(reason="r", variant={}, proved=True, reference_max_ratio={})
    proof |= dict(reference_divergence=None, variant_max_ratio={}, variant_max_error={})
    result.explanation = ExplanationProof(
        **proof, variant_compared=500, variant_divergence=None, variant_stopped_at=None
    )
    assert result.coverage == 1.0
    assert build_document([result], {}, {})["coverage"]["partial"] == []
    stopped = replace(result.explanation, variant_compared=400, variant_stopped_at=400)
    result.explanation = stopped
    assert result.coverage == 0.8
    doc = build_document([result], {}, {})
    assert doc["coverage"]["compared_steps"] == 400
    assert "compared 400/500 steps" in render_html(doc)
