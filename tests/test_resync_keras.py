"""Resynchronised stepping on resnet18's Keras port (keras.tensorflow, float32): the late bugs
of ``test_resync`` (learning rate doubled, momentum zeroed, BatchNorm frozen, each after the
float32 horizon of step 2) fail at the step they start, and the unplanted cell stays
``explained``.

The cell is explained (Keras's moving variance takes the biased batch variance): the plain
reference parts from it at step 0, so from the horizon on the port is resynchronised to the
declared explanation's reference variant, and a late bug shows as that variant's divergence
(the explanation "does not account for it"); the cell's ``first_divergence`` stays the plain
reference's, the explained difference at step 0.
"""

from __future__ import annotations

import pytest

from equiv.backends.implementations import ImplSource
from equiv.backends.registry import get_backend
from equiv.contract.case import get_case
from equiv.contract.records import Cell
from equiv.quality.mutants import RESNET18_LATE_KERAS
from equiv.quality.selftest import run_mutant
from equiv.running.runner import RunOptions, run_cell

BACKEND = "keras.tensorflow"
STEPS = 6
LATE = {m.id: m for m in RESNET18_LATE_KERAS}


@pytest.fixture(autouse=True)
def needs_keras_on_tensorflow():
    if reason := get_backend(BACKEND).availability():
        pytest.skip(reason)


def run(resync: bool, impl: ImplSource | None = None):
    options = RunOptions.verdict_only(steps=STEPS, resync=resync)
    return run_cell(Cell("resnet18", BACKEND, "float32"), options, impl=impl)


def planted(mutant) -> ImplSource:
    module = get_backend(mutant.backend).implementation_module(get_case(mutant.case))
    return ImplSource(module, mutant.patches)


def test_resnet18_keras_float32_stays_explained_resynchronised_from_2():
    """Unplanted: every step compared with the variant (steps 2 to 5 from its own state)."""
    result = run(resync=True)
    assert result.status == "explained", result.reason
    assert result.resynchronised_from == 2
    proof = result.explanation
    assert proof.proved and proof.variant_divergence is None
    assert (proof.variant_compared, proof.variant_resynchronised_from) == (STEPS, 2)


def test_free_running_a_late_bug_is_explained_unseen():
    """Why resync: the same planted bug, free-running, is taken for the explained difference
    (the variant is compared up to its horizon only, before the bug starts)."""
    result = run(resync=False, impl=planted(LATE["keras-resnet-lr-doubled-late"]))
    assert result.status == "explained", result.reason
    assert result.explanation.variant_compared == 2


@pytest.mark.parametrize(
    "bug",
    [
        "keras-resnet-lr-doubled-late",
        pytest.param("keras-resnet-momentum-zeroed-late", marks=pytest.mark.slow),
        pytest.param("keras-resnet-batchnorm-frozen-late", marks=pytest.mark.slow),
    ],
)
def test_a_bug_that_starts_late_fails_at_its_step(bug):
    """``equiv selftest``'s late Keras mutants: each cell fails, and the divergence it fails
    on (the variant's: the explanation does not account for it) is at the step it starts."""
    mutant = LATE[bug]
    assert (mutant.steps, mutant.resync) == (STEPS, True)
    outcome = run_mutant(mutant)
    result = outcome.result
    assert result.status == "fail", result.reason
    proof = result.explanation
    assert proof is not None and not proof.proved
    assert mutant.matches(proof.variant_divergence), proof.variant_divergence
    assert "does not account for it" in result.reason
    assert outcome.detected, outcome.observed()  # as equiv selftest counts it
