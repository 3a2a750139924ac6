"""Every port loads the reference's training state in place, in every mode: resynchronised
from step 2 on (``RunOptions.resync_from``, whether or not the cell has a float32 horizon),
each cell keeps the verdict it has free-running, and every step after 2 is compared from the
reference's own state (or, for an explained cell, its variant's).

What this catches: a ``load_state`` that breaks the running port (a compiled step that no
longer sees the loaded values, a wrong layout, a retrace that fails, a refused state); a port
without ``load_state`` is reported as not resynchronised. What it cannot catch: a load that
drops part of the state, since here the port's own state is, to rounding, the one it is
given. The per-framework tests load a later state into a fresh port for that
(``test_load_state_*``, ``test_teacher_forcing``). One case per kind of carried state runs in
CI; the whole matrix is ``slow`` (about 5 minutes here).
"""

from __future__ import annotations

import pytest

from equiv.backends.registry import all_backends
from equiv.contract.records import Cell
from equiv.running.matrix import run_cells, select_cells
from equiv.running.runner import RunOptions

STEPS, FROM = 4, 2
#: a branch decided on the previous loss; a data position (partial last batch); Adam, and a
#: declared explanation (Keras's epsilon-hat Adam) proven from the variant's state
KINDS = ("dynamic_branching", "minibatch_partial", "parallel_blocks")
#: one backend a family: eager torch, the numpy port, a traced TF step, Keras, a jitted JAX step
FAMILIES = ("numpy", "torch.eager", "tf.function", "keras.tensorflow", "jax.jit")


def resynchronised(cells: list[Cell]) -> list[str]:
    options = RunOptions.verdict_only(steps=STEPS, resync=True, resync_from=FROM)
    problems = []
    for result in run_cells(cells, options, jobs=2):
        if result.status == "skip":
            continue
        if result.status not in ("pass", "explained"):
            problems.append(f"{result.cell.id}: {result.status}: {result.reason[:300]}")
        elif (result.resynchronised_from, result.coverage) != (FROM, 1.0):
            why = [w for w in result.warnings if "resynchronised" in w]
            problems.append(f"{result.cell.id}: not resynchronised: {why}")
    return problems


def test_one_port_a_family_loads_each_kind_of_carried_state():
    registered = all_backends()  # jax.jit comes with the equiv-jax plugin
    backends = [b for b in FAMILIES if b in registered]
    assert resynchronised(select_cells(KINDS, backends, ["float64"])) == []


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_port_loads_the_training_state(dtype):
    cells = [c for c in select_cells([], [], [dtype]) if c.case != "resnet18"]
    assert resynchronised(cells) == []
