"""Resynchronised stepping on resnet18's JAX port (jax.jit, float32): from step 2 (the float32
horizon) each step starts from the float64 reference's state, loaded into the running port
(``load_state``: parameters, momentum buffers, running statistics) without a retrace, so the
cell compares every step; and the late bugs of ``RESNET18_LATE_JAX`` (planted on the host side
of the jitted step) fail at the step they start, where free-running they pass unseen.

The cells are marked ``slow``: each compiles resnet18's step and runs its float64 reference and
one-step calibrations, 20-45 s a cell on a 2-core machine (run with ``pytest -m slow``). The
check that the planted sources still apply to the port's code is quick and stays in the
default run.
"""

from __future__ import annotations

import dataclasses
from importlib.metadata import PackageNotFoundError, distribution

import pytest
from equiv.backends.implementations import ImplSource
from equiv.case import get_case
from equiv.quality.mutants import RESNET18_LATE_JAX
from equiv.quality.selftest import run_mutant
from equiv.records import Cell
from equiv.registry import get_backend
from equiv.running.runner import RunOptions, run_cell

try:
    distribution("equiv-jax")
except PackageNotFoundError:
    pytest.skip(
        "equiv-jax is not installed (pip install -e plugins/equiv-jax)", allow_module_level=True
    )
pytest.importorskip("jax", reason="jax is not installed (pip install equiv-jax installs it)")

STEPS = 6
LATE = {m.id: m for m in RESNET18_LATE_JAX}


def test_the_late_mutants_are_jax_jit_resnet18_cells_that_plant_into_the_port():
    """Each names the plugin's resnet18 module, which the backend would pick itself, and its
    patch applies there (the source it replaces occurs once) to a module that imports."""
    assert len(LATE) == 3
    backend = get_backend("jax.jit")
    for mutant in LATE.values():
        assert (mutant.case, mutant.backend, mutant.dtype) == ("resnet18", "jax.jit", "float32")
        assert (mutant.steps, mutant.resync) == (STEPS, True)
        assert mutant.module == backend.implementation_module(get_case(mutant.case))
        planted = ImplSource(mutant.module, mutant.patches).load()
        assert callable(planted.Trainer.run_step)


@pytest.mark.slow
def test_resnet18_jit_float32_compares_every_step_and_passes():
    result = run_cell(
        Cell("resnet18", "jax.jit", "float32"), RunOptions.verdict_only(steps=STEPS, resync=True)
    )
    assert result.status == "pass", result.reason
    assert (result.compared_steps, result.resynchronised_from) == (STEPS, 2)
    assert result.coverage == 1.0
    assert result.traces == 1  # four loads, no retrace


@pytest.mark.slow
@pytest.mark.parametrize("bug", sorted(LATE))
def test_a_bug_that_starts_late_is_detected_at_its_step(bug):
    mutant = LATE[bug]
    outcome = run_mutant(mutant)
    result = outcome.result
    assert result.status == "fail", result.reason
    assert outcome.detected, outcome.observed()
    assert result.first_divergence.step == mutant.expected["step"]
    assert result.traces == 1  # planted outside the jitted step: still one trace


@pytest.mark.slow
def test_free_running_a_late_bug_passes_unseen():
    """Why resync: the same planted bug, free-running, passes (2 of 6 steps compared)."""
    mutant = dataclasses.replace(LATE["jax-resnet-lr-doubled-late"], resync=False)
    result = run_mutant(mutant).result
    assert result.status == "pass" and result.compared_steps == 2, result.reason
