"""docs/parity-json.md is the schema of what equiv writes: every field a run writes is
documented there, and every documented field is written by some run (issue 11). The documents
checked are written here by real runs: numpy cells that pass, branch, fail (a planted bug,
localized), error (with a traceback) and are timed; a torch cell that is explained; a merge of
two documents; and the partial document of a run cut off."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path

import pytest
from planted import DOUBLED_LR, OTHER_BRANCH

from equiv.backends.implementations import ImplSource, Patch
from equiv.backends.registry import get_backend
from equiv.contract.case import Explanation, all_cases, get_case
from equiv.contract.records import Cell, CellResult
from equiv.report.merge import merge_documents
from equiv.results.document import build_document, document_from_entries
from equiv.running.output import run_settings
from equiv.running.runner import RunOptions, run_cell

DOC = Path(__file__).resolve().parent.parent / "docs" / "parity-json.md"
OPTIONS = RunOptions(steps=6, bench_rounds=2, bench_warmup=1, keep_trajectories=False)
#: the docs' headings, and where in a document each section's fields are
SECTIONS = {
    "The document": "document",
    "`environment`": "environment",
    "`run`": "run",
    "`tolerance_policy`": "tolerance_policy",
    "A cell": "cell",
    "A merged cell": "cell",
    "`first_divergence`": "first_divergence",
    "`branches`": "branches",
    "`benchmark`": "benchmark",
}


def documented() -> dict[str, set[str]]:
    """Section -> the field names of its table (``| `a`, `b` | type | meaning |`` rows)."""
    fields: dict[str, set[str]] = {}
    section = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"#+ (.*)", line)
        if heading:
            section = SECTIONS.get(heading.group(1).strip())
            continue
        row = re.match(r"\| (`[^|]*`) \|", line)
        if section and row:
            names = re.findall(r"`([^`]+)`", row.group(1))
            fields.setdefault(section, set()).update(names)
    return fields


def written(documents: list[dict]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {name: set() for name in SECTIONS.values()}
    for doc in documents:
        out["document"] |= set(doc)
        for key in ("environment", "run", "tolerance_policy"):
            out[key] |= set(doc.get(key) or {})
        for cell in doc["cells"]:
            out["cell"] |= set(cell)
            for key in ("first_divergence", "branches", "benchmark"):
                if isinstance(cell.get(key), dict):
                    out[key] |= set(cell[key])
    return out


def numpy_cells() -> list[CellResult]:
    bug = ImplSource(
        "cases.two_layer_mlp.reference",
        (Patch("dense2_back(loss_back())", "dense2_back(2 * loss_back())"),),
    )
    crash = ImplSource(
        "cases.two_layer_mlp.reference",
        (Patch("diff = y_pred - y", "diff = y_pred - y[:1, :1, None]"),),
    )
    return [
        run_cell(Cell("two_layer_mlp", "numpy", "float64"), OPTIONS),
        run_cell(Cell("dynamic_branching", "numpy", "float64"), OPTIONS, impl=OTHER_BRANCH),
        run_cell(Cell("dynamic_branching", "numpy", "float32"), OPTIONS),
        run_cell(Cell("keras_sequential", "numpy", "float32"), OPTIONS),  # flops, gflops
        run_cell(
            Cell("two_layer_mlp", "numpy", "float32"), replace(OPTIONS, diagnose=True), impl=bug
        ),
        run_cell(Cell("two_layer_mlp", "numpy", "float64"), OPTIONS, impl=crash),
        resnet18_cell(),
    ]


def resnet18_cell() -> CellResult:
    """A failing cell of a case with activations and state (``layers``, ``state``): the
    numpy port of resnet18 with Keras's BatchNorm eps, for one step."""
    eps = ImplSource("cases.resnet18.reference", (Patch('eps = self.cfg["bn_eps"]', "eps = 1e-3"),))
    options = replace(OPTIONS, steps=1, bench_rounds=0)
    return run_cell(Cell("resnet18", "numpy", "float64"), options, impl=eps)


def explained_cell(monkeypatch) -> CellResult:
    """A declared difference proven by its variant: torch.eager with its learning rate
    doubled, declared as such (as tests/test_explained.py plants it)."""
    spec = get_case("keras_sequential")
    explanation = Explanation("torch.eager", "planted: lr doubled", {"lr": 2 * spec.config["lr"]})
    monkeypatch.setitem(all_cases(), spec.name, replace(spec, explanations=(explanation,)))
    return run_cell(Cell("keras_sequential", "torch.eager", "float64"), OPTIONS, impl=DOUBLED_LR)


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> list[dict]:
    from equiv.results.document import load_document
    from equiv.running.output import write_outputs

    out = tmp_path_factory.mktemp("doc")
    results = numpy_cells()
    statuses = {r.status for r in results}
    assert {"pass", "fail", "error"} <= statuses, [(r.cell.id, r.status) for r in results]
    write_outputs(out, results, OPTIONS, argv=["equiv", "run"], jobs=1)
    whole = load_document(out / "parity.json")
    other = copy.deepcopy(whole)  # another job's result: one cell skipped, one different
    other["cells"][0].update(status="skip", reason="not installed there")
    other["cells"][1]["max_error"] = {"loss": 1.0}
    merged = merge_documents([("a.json", whole), ("b.json", other)])
    cut_off = document_from_entries(
        [results[0].to_json()],
        whole["environment"],
        run_settings(OPTIONS),
        incomplete={"reason": "interrupted by SIGTERM", "missing": ["x"], "resume": "equiv"},
    )
    return [whole, merged, cut_off]


def test_every_written_field_is_documented(documents):
    docs = documented()
    for section, names in written(documents).items():
        undocumented = names - docs.get(section, set())
        assert not undocumented, f"{section}: written but not in {DOC.name}: {undocumented}"


def test_every_documented_field_is_written(documents, monkeypatch):
    if get_backend("torch.eager").availability():
        pytest.skip("an explained cell needs torch (the other direction is checked above)")
    explained = explained_cell(monkeypatch)
    assert explained.status == "explained", explained.reason
    extra = build_document([explained], {}, run_settings(OPTIONS))
    seen = written([*documents, extra])
    for section, names in documented().items():
        missing = names - seen[section]
        assert not missing, f"{section}: in {DOC.name} but no run wrote it: {missing}"


def test_the_parser_reads_the_tables():
    """A heading renamed or a table reshaped must not silently empty the check above."""
    docs = documented()
    assert set(docs) == set(SECTIONS.values())
    assert {"status", "max_ratio", "phases_s", "explanation"} <= docs["cell"]
    assert {"median_s", "iqr_s", "gflops"} <= docs["benchmark"]
