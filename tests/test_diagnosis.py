"""The catalogue of known differences and the diagnosis that searches it.

The catalogue is data held to its generated page and to the standard keys; planted porting
mistakes in equiv's own cases are diagnosed by their entry (the transformer's, and the
diagnosis of every declared difference, are in the example package's tests); a stale
declaration fails under --strict-declarations; ``equiv diagnose`` answers bad input in one line.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from equiv.backends.registry import all_backends
from equiv.case import Explanation, all_cases
from equiv.catalogue import ENTRIES, KEYS
from equiv.catalogue.entries import DERIVED, PHASES
from equiv.catalogue.page import render
from equiv.checking.verdict import decide
from equiv.quality.mistakes import MISTAKES, diagnose_mistake
from equiv.records import Cell, CellResult

ROOT = Path(__file__).resolve().parent.parent


def test_the_catalogue_page_is_generated_from_the_data():
    page = (ROOT / "docs" / "known-differences.md").read_text(encoding="utf-8")
    assert page == render(), "regenerate: python -m equiv.catalogue.page docs/known-differences.md"
    for item in ENTRIES:  # one row per entry
        assert sum(line.startswith(f"| `{item.id}` |") for line in page.splitlines()) == 1


def test_every_entry_is_well_formed():
    assert len({e.id for e in ENTRIES}) == len(ENTRIES)
    for item in ENTRIES:
        assert item.phase in PHASES, item.id
        assert item.sources and item.what and item.frameworks, item.id
        assert (item.variant is None) == bool(item.not_expressible), item.id
        for key, value in (item.variant or {}).items():
            assert key in KEYS, f"{item.id}: {key} is not a standard key"
            if isinstance(value, DERIVED):
                assert value.key in KEYS, item.id
        for key in item.requires:  # a standard key, or a parameter name
            assert key in KEYS or "." in key, f"{item.id} requires {key}"


def _declarations() -> list[tuple[str, dict, Explanation]]:
    """Every declaration, with the config it applies to (a backend's: every case's)."""
    cases = list(all_cases().values())
    found = [(f"case {s.name}", s.config, e) for s in cases for e in s.explanations]
    for backend_id, backend in all_backends().items():
        for e in getattr(backend, "explanations", ()):
            found += [(f"backend {backend_id} on {s.name}", s.config, e) for s in cases]
    return found


def test_every_declared_variant_uses_the_standard_keys():
    """A declaration in a case or a backend (equiv's and the installed packages') speaks the
    catalogue's vocabulary, so diagnosis can find what it declares."""
    declared = _declarations()
    assert declared
    unknown = {
        f"{owner}: {key}" for owner, _, e in declared for key in e.variant if key not in KEYS
    }
    assert not unknown


def test_every_declared_value_is_a_catalogue_entry():
    """What a declaration sets is what some catalogue entry sets for that case, derived values
    resolved against its config, so diagnosis can find it (lstm_regressor's frozen bias is the
    Keras LSTM entry; resnet18's float32 momentum the TensorFlow cast entry)."""
    missing = []
    for owner, config, e in _declarations():
        for key, value in e.variant.items():
            offered = [
                v.value(config) if isinstance(v, DERIVED) else v
                for item in ENTRIES
                for k, v in (item.variant or {}).items()
                if k == key and (not isinstance(v, DERIVED) or v.key in config)
            ]
            if value not in offered:
                missing.append(f"{owner}: {key}={value!r}")
    assert not missing


def test_a_stale_declaration_warns_and_under_strict_fails():
    class Matching:  # a comparison that found no divergence
        first_divergence = None
        compared = 5
        warnings: list[str] = []

    class Check:
        comparison = Matching()

    declared = Explanation(backends="*", reason="a framework default since changed", variant={})
    loose = CellResult(cell=Cell("c", "b", "float32"), status="error")
    decide(loose, [Check()], declared)
    assert loose.status == "pass" and "out of date" in loose.warnings[0]
    strict = CellResult(cell=Cell("c", "b", "float32"), status="error")
    decide(strict, [Check()], declared, strict=True)
    assert strict.status == "fail" and strict.reason.startswith("stale declaration")


def _mistakes():
    for m in MISTAKES:
        marks = (pytest.mark.slow,) if m.case == "resnet18" else ()
        yield pytest.param(m, marks=marks, id=m.id)


@pytest.mark.parametrize("mistake", list(_mistakes()))
def test_a_planted_porting_mistake_is_diagnosed_by_its_entry(mistake):
    result = diagnose_mistake(mistake)
    if isinstance(result, str):
        pytest.skip(result)
    assert mistake.judged(result) is None, mistake.judged(result)


def equiv(*args):
    return subprocess.run(
        [sys.executable, "-m", "equiv", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "name a cell"),
        (("two_layer_mlp",), "is not a cell id"),
        (("no_such_case-torch.eager-float64",), "unknown case"),
        (("--from", "/no/such/parity.json"), "cannot read"),
    ],
)
def test_diagnose_bad_input_is_one_line_and_exit_2(args, message):
    done = equiv("diagnose", *args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_diagnose_a_passing_cell_says_so_and_exits_0():
    done = equiv("diagnose", "two_layer_mlp-numpy-float64", "--steps", "2")
    assert done.returncode == 0, done.stderr[-1000:]
    assert "two_layer_mlp-numpy-float64: pass" in done.stdout


def test_a_cell_that_compared_no_step_is_not_a_pass():
    """A verdict on nothing is an error, with why (the comparison's own warnings)."""

    class Nothing:
        first_divergence = None
        compared = 0
        warnings = ["steps from 0 on are not compared: the float32 horizon"]

    class Check:
        comparison = Nothing()

    result = CellResult(cell=Cell("c", "b", "float32"), status="pass")
    decide(result, [Check()], None)
    assert result.status == "error" and "no step was compared" in result.reason
