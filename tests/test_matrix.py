"""The parity matrix: every (case, backend, dtype) cell, at the seed's step counts.

A cell passes, or is ``explained``: it differs from the reference for a declared, documented
reason, and the declared reference variant is proven to match it (docs/verdicts.md). Nothing
is marked as an expected failure.
"""

import functools
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from equiv.backends.registry import all_backends
from equiv.contract.divergence import describe
from equiv.contract.records import Cell
from equiv.drift.labels import DRIFT, IDENTICAL, UNCHANGED, label_pair
from equiv.drift.sides import Side, load_side
from equiv.running.environment import cpu_features, cpu_name, environment

pytestmark = pytest.mark.matrix

#: full runs' baselines (``equiv baseline``; tests/fixtures/matrix/README.md): at the
#: seed's step counts, at 30 steps, and at the 10 steps of the default test run (pyproject's
#: equiv_steps); each is compared only on the CPU and packages that made it
STORED_DIR = Path(__file__).parent / "fixtures" / "matrix"


def stored_path(steps: int | None) -> Path:
    return STORED_DIR / ("stored.json" if steps is None else f"stored-steps{steps}.json")


def test_parity(equiv_cell, equiv_run_cell, equiv_options):
    result = equiv_run_cell(equiv_cell)
    if result.status == "skip":
        pytest.skip(result.reason)
    for warning in result.warnings:
        print("warning:", warning)
    assert result.status in ("pass", "explained"), (
        f"{equiv_cell.id}: {result.status}: {result.reason}"
        + (f"\n{result.traceback}" if result.traceback else "")
        + (f"\n{describe(result.first_divergence)}" if result.first_divergence else "")
    )
    assert result.compared_steps > 0
    if result.status == "explained":
        assert result.explanation.proved
    assert_same_as_stored(result, equiv_options)


@functools.cache
def stored_result(steps: int | None) -> tuple[Side | None, list[str]]:
    """The stored baseline for these steps (``equiv baseline``), and what of this machine
    differs from the one that made it."""
    path = stored_path(steps)
    if not path.exists():
        warnings.warn(f"no stored result for {steps} steps ({path.name})", stacklevel=2)
        return None, ["steps"]
    stored = load_side(path, "stored")
    stored_env = stored.environment
    differs = [] if stored_env["cpu"] == cpu_name() else [f"cpu {cpu_name()!r}"]
    if stored_env["cpu_features"] != cpu_features():
        differs.append(
            f"CPU vector instructions {cpu_features()!r} (stored: {stored_env['cpu_features']!r})"
        )
    backends = [b for b in all_backends().values() if b.availability() is None]
    versions = environment(0, 1, backends)["versions"]  # as a run records them
    for name, wanted in stored_env["versions"].items():
        here = versions.get(name)
        if here != wanted:
            differs.append(f"{name} {here} (stored: {wanted})")
    if differs:
        warnings.warn(
            "the matrix is not compared with its stored result: this machine differs in "
            + ", ".join(differs),
            stacklevel=2,
        )
    return stored, differs


def stored_cell(result, options) -> dict | None:
    """The stored entry to compare ``result`` with: None unless its numbers were determined the
    same way: same seed, steps and threads, same packages, same CPU model and vector
    instructions (XLA compiles for the host's: AVX-512 rounds float64 differently), and the
    cell's own step count where the stored file has it (a case's ``matrix_steps`` caps the
    suite's cells, not an explicit ``--equiv-steps``)."""
    stored, differs = stored_result(options.steps)
    if stored is None or differs:
        return None
    want = stored.cells.get(result.cell.id)
    run = stored.settings
    if want is None or (options.seed, options.steps, options.threads) != (
        run["seed"],
        run["steps"],
        run["threads"],
    ):
        return None
    if "steps" in want and want["steps"] != result.steps:
        return None
    return want


def assert_same_as_stored(result, options) -> None:
    """``equiv diff``'s label of the cell against the stored baseline is no change of verdict
    (no regression, fix or changed explanation: labels of ``equiv.drift.labels``), and its
    max_ratio is the stored one (1e-12 relative)."""
    want = stored_cell(result, options)
    if want is None:
        return
    stored, _ = stored_result(options.steps)
    here = Side("NEW", Path("this run"), stored.schema, stored.settings, {}, {})
    here.cells[result.cell.id] = {"id": result.cell.id, **result.to_json()}
    pair = label_pair(result.cell.id, stored, here, [])
    assert pair.label in (IDENTICAL, UNCHANGED, DRIFT), f"{pair.label}: {pair.why}"
    for group, stored_ratio in want["max_ratio"].items():
        got, expected = float(result.max_ratio[group]), float(stored_ratio)
        assert math.isclose(got, expected, rel_tol=1e-12, abs_tol=0.0), (
            f"max_ratio[{group}] {got!r}, stored {expected!r}"
        )


def test_a_cell_of_another_length_than_the_stored_one_is_not_compared():
    """resnet18's cells run 2 steps in the suite (``matrix_steps``) but 10 under an explicit
    ``--equiv-steps 10``: those 10-step numbers are not the stored 2-step ones."""
    options = SimpleNamespace(seed=0, steps=10, threads=1)
    cell = Cell("resnet18", "torch.eager", "float64")
    doc, differs = stored_result(10)
    if doc is None or differs:
        pytest.skip("the 10-step stored run is another machine's")
    stored = doc.cells[cell.id]
    assert stored["steps"] == 2
    assert stored_cell(SimpleNamespace(cell=cell, steps=2), options) is stored
    assert stored_cell(SimpleNamespace(cell=cell, steps=10), options) is None
