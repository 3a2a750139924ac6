"""TensorFlow ports load the reference's training state in place (``load_state``).

Every TF port (tf.eager, tf.function, tf.xla; tf.v1graph in its finalized graph) takes the
float64 reference's state after k steps (parameters, optimizer slots, BatchNorm's running
statistics, the previous loss) and its next step is the reference's, to rounding: what
resynchronised stepping and teacher-forced localization rely on. Minibatch ports keep their
own data position, so they step k times before loading (from other parameters: a load that
missed them would show). Planted bugs (a load that skips the momentum buffers, forgets Adam's
step count or the previous loss) are caught, and a load neither retraces a compiled step nor
adds to a TF1 graph.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import replace

import numpy as np
import pytest

from equiv.backends.implementations import load_implementation
from equiv.backends.registry import get_backend
from equiv.contract.case import get_case
from equiv.contract.records import Cell, TrainingState
from equiv.contract.trainer import StateNotLoadable
from equiv.reference.trainer import ReferenceTrainer
from equiv.running.runner import RunOptions, run_cell
from equiv.testing import assert_records_agree

TF_MODES = ["tf.eager", "tf.function", "tf.xla", "tf.v1graph"]
#: float64 to rounding (seen: 1e-14 for resnet18, 1e-16 for the others)
REL = 1e-10
#: reference steps before the load: resnet18's cost a second each, minibatch_partial's 7 put
#: the loaded step on its partial batch (of 4)
STEPS = {"resnet18": 2, "minibatch_partial": 7}
#: ports whose data pipeline keeps its own position: they step as often before loading
PIPELINES = ("minibatch", "minibatch_partial")
CASES = [
    "two_layer_mlp",
    "sigmoid_custom_op",
    "dynamic_branching",
    "static_graph_step",
    "keras_sequential",
    "keras_sequential_adam",
    "minibatch",
    "minibatch_partial",
    "parallel_blocks",
    "resnet18",
]
#: resnet18 on XLA compiles for ~25 s (2 CPUs)
SLOW = {("resnet18", "tf.xla")}
CELLS = [
    pytest.param(case, mode, marks=[pytest.mark.slow] if (case, mode) in SLOW else [])
    for case in CASES
    for mode in TF_MODES
]


def tf_backend(backend_id: str):
    backend = get_backend(backend_id)
    if reason := backend.availability():
        pytest.skip(reason)
    backend.configure(1)
    return backend


def tf_port(case: str, backend_id: str, state=None):
    backend = tf_backend(backend_id)
    spec = get_case(case)
    state = state or spec.make_state(0, "float64")
    return backend.build_trainer(spec, state, load_implementation(backend, spec))


def tf_module(case: str):
    """A case's TF implementation module (after the skip: it imports tensorflow)."""
    tf_backend("tf.eager")
    return importlib.import_module(f"cases.{case}.tf_impl")


@functools.cache
def reference_at(case: str, steps: int, prev_loss: float | None = None):
    """The float64 reference's training state after ``steps`` steps (its previous loss
    replaced by ``prev_loss``, if given) and the record of the step it takes from there; one
    run for every mode (resnet18's reference takes a second a step)."""
    spec = get_case(case)
    state = spec.make_state(0, "float64")
    reference = ReferenceTrainer(spec, state)
    for _ in range(steps):
        reference.run_step()
    resume = reference.training_state()
    if prev_loss is not None:
        resume = replace(resume, prev_loss=prev_loss)
        reference = ReferenceTrainer(spec, state.resumed(resume))
    reference.run_step()
    return resume, reference.record()


@pytest.fixture(autouse=True, scope="module")
def _release_the_cached_references():
    """resnet18's reference states go with the module's last test (a worker runs other
    modules' resnet18 cells after it)."""
    yield
    reference_at.cache_clear()


def loaded_next_step(case: str, backend_id: str, port_steps: int | None = None, prev_loss=None):
    """Load the reference's state after ``STEPS`` steps into a port that stepped
    ``port_steps`` times (a pipeline's ports as often, from halved parameters; others none),
    step it once: its record is the reference's next one."""
    steps = STEPS.get(case, 3)
    spec = get_case(case)
    state = spec.make_state(0, "float64")
    if port_steps is None:
        port_steps = steps if case in PIPELINES else 0
    if port_steps:  # other parameters than the reference's: loading must replace them
        state = replace(state, params={k: 0.5 * v for k, v in state.params.items()})
    port = tf_port(case, backend_id, state)
    for _ in range(port_steps):
        port.run_step()
    resume, theirs = reference_at(case, steps, prev_loss)
    port.load_state(resume)
    port.run_step()
    ours = port.record()
    assert_records_agree(ours, theirs, REL)
    return ours


@pytest.mark.parametrize(("case", "backend_id"), CELLS)
def test_a_tf_port_loaded_mid_training_takes_the_references_next_step(case, backend_id):
    loaded_next_step(case, backend_id)


@pytest.mark.parametrize("backend_id", TF_MODES)
@pytest.mark.parametrize("case", ["dynamic_branching", "static_graph_step"])
def test_the_loaded_previous_loss_picks_the_branch(case, backend_id):
    """A previous loss below the threshold (every loss of the run is far above it): the
    loaded port takes w2a, as the reference does from that state."""
    assert loaded_next_step(case, backend_id, prev_loss=0.0).branch == "w2a"


# -- planted bugs: a load that misses part of the state is off --------------------------------


def test_a_load_that_skips_the_momentum_buffers_is_off(monkeypatch):
    """Planted: resnet18's SGD buffers left at the fresh port's zeros."""
    monkeypatch.setattr(tf_module("resnet18").SGDMomentum, "slot_values", lambda *_: [])
    with pytest.raises(AssertionError):
        loaded_next_step("resnet18", "tf.eager")


@pytest.mark.parametrize("backend_id", ["tf.function", "tf.v1graph"])
def test_a_load_that_forgets_adams_step_count_is_off(monkeypatch, backend_id):
    """Planted: the moments loaded, the step count left at the fresh port's 0 (the bias
    corrections of a first step)."""
    adam = tf_module("keras_sequential").Adam
    real = adam.slot_values

    def forgets_t(self, canonical, names):
        return [(var, value) for var, value in real(self, canonical, names) if var is not self.t]

    monkeypatch.setattr(adam, "slot_values", forgets_t)
    with pytest.raises(AssertionError):
        loaded_next_step("parallel_blocks", backend_id)


@pytest.mark.parametrize(
    ("case", "backend_id", "owner"),
    [
        ("dynamic_branching", "tf.eager", "Branching"),
        ("static_graph_step", "tf.function", "Trainer"),
        ("static_graph_step", "tf.v1graph", "GraphTrainer"),
    ],
)
def test_a_load_that_forgets_the_previous_loss_takes_the_other_branch(
    monkeypatch, case, backend_id, owner
):
    """Planted: the previous loss not loaded (the port's own initial one decides)."""
    monkeypatch.setattr(getattr(tf_module(case), owner), "load_prev_loss", lambda *_: None)
    with pytest.raises(AssertionError):
        loaded_next_step(case, backend_id, prev_loss=0.0)


def test_a_minibatch_port_keeps_its_own_data_position():
    """Loaded into a fresh port, whose pipeline stands at the first batch, the reference's
    state at step 3 is stepped on another batch than the reference's: the data position is
    the port's own, not loaded (so that a pipeline that is off stays seen)."""
    with pytest.raises(AssertionError):
        loaded_next_step("minibatch", "tf.function", port_steps=0)


# -- in place: no retrace, no new op -----------------------------------------------------------


@pytest.mark.parametrize("backend_id", ["tf.function", "tf.xla", "tf.v1graph"])
@pytest.mark.parametrize("case", ["keras_sequential_adam", "static_graph_step"])
def test_loading_neither_retraces_nor_adds_to_the_graph(case, backend_id):
    backend = tf_backend(backend_id)
    port = tf_port(case, backend_id)
    port.run_step()
    port.record()
    traces = backend.traces
    graph = getattr(getattr(port, "sess", None), "graph", None)
    ops = len(graph.get_operations()) if graph is not None else None
    for steps in (1, 2):
        port.load_state(reference_at(case, steps)[0])
        port.run_step()
        port.record()
    assert backend.traces == traces
    if graph is not None:
        assert graph.finalized and len(graph.get_operations()) == ops


@pytest.mark.parametrize(
    ("case", "backend_id", "steps"),
    [
        ("keras_sequential_adam", "tf.function", 5),
        ("keras_sequential_adam", "tf.v1graph", 5),
        pytest.param("resnet18", "tf.function", 4, marks=pytest.mark.slow),  # 30 s each
        pytest.param("resnet18", "tf.v1graph", 4, marks=pytest.mark.slow),
    ],
)
def test_a_float32_cell_resynchronised_from_step_2_passes(case, backend_id, steps):
    """The runner loads the reference's state into the running port before each step from
    step 2 on (``RunOptions.resync_from``)."""
    tf_backend(backend_id)
    options = RunOptions.verdict_only(steps=steps, resync=True, resync_from=2)
    result = run_cell(Cell(case, backend_id, "float32"), options)
    assert result.status == "pass", result.reason
    assert result.resynchronised_from == 2


# -- what a port cannot load, it refuses, saying which ----------------------------------------


def test_adams_state_into_a_port_without_slots_is_refused():
    state = get_case("two_layer_mlp").make_state(0, "float64")
    port = tf_port("two_layer_mlp", "tf.eager", state)
    resume = TrainingState(1, state.params, {"t": np.asarray(1)}, {})
    with pytest.raises(StateNotLoadable, match="SGD keeps no slots"):
        port.load_state(resume)


def test_state_the_port_has_no_variable_for_is_refused():
    state = get_case("keras_sequential_adam").make_state(0, "float64")
    port = tf_port("keras_sequential_adam", "tf.v1graph", state)
    resume = TrainingState(0, state.params, {}, {"bn1.running_mean": np.zeros(3)})
    with pytest.raises(StateNotLoadable, match="bn1.running_mean"):
        port.load_state(resume)
    momentum = {"momentum/w1": np.zeros_like(state.params["w1"])}
    with pytest.raises(StateNotLoadable, match="Adam keeps no slot .* momentum/w1"):
        port.load_state(TrainingState(0, state.params, momentum, {}))


def test_an_optimizer_with_slots_and_no_slot_values_is_refused(monkeypatch):
    """Even the empty state of a first step: the port's slots would keep what they hold."""
    monkeypatch.delattr(tf_module("keras_sequential").Adam, "slot_values")
    state = get_case("keras_sequential_adam").make_state(0, "float64")
    port = tf_port("keras_sequential_adam", "tf.eager", state)
    with pytest.raises(StateNotLoadable, match=r"Adam keeps slots \(t, m, v\)"):
        port.load_state(TrainingState(0, state.params, {}, {}))
