"""Keras ports load the reference's training state in place (``load_state``), each through its
own path: resnet18's channels-last parameters, BatchNorm moving statistics and SGD momentum;
the branching ports' previous loss; the transformer block's reshaped attention kernels and
AdamW moments; ``model.fit``'s state, assigned in ``fit``'s own thread between batches.

Each test runs the reference (its declared explanation's variant, the one the port is proved
against) some steps, loads its training state into a port built at step 0, steps both once,
and holds the two records to ~1e-9 relative (float64, keras.tensorflow or keras.fit). Each load
path has a planted bug (the load monkeypatched wrong) that the same check must catch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_teacher_forcing import next_step_after_loading

from equiv.backends.implementations import load_implementation
from equiv.backends.registry import get_backend
from equiv.contract.case import get_case
from equiv.contract.records import TrainingState
from equiv.contract.trainer import StateNotLoadable
from equiv.reference.trainer import ReferenceTrainer

REL = 1e-9


def keras_cell(case: str, backend_id: str = "keras.tensorflow"):
    """A float64 port on ``backend_id`` and the reference its declared explanation says it
    computes (as ``test_teacher_forcing.keras_cell``, for any Keras backend)."""
    from equiv.checking.verdict import declared_explanation

    backend = get_backend(backend_id)
    if reason := backend.availability():
        pytest.skip(reason)
    backend.configure(1)
    try:
        spec = get_case(case)
    except Exception as exc:  # a plugin's case (the transformer example) not installed
        pytest.skip(f"{case}: {exc}")
    explanation = declared_explanation(spec, backend, "float64")
    variant = explanation.variant_key() if explanation else ()
    state = spec.make_state(0, "float64", variant)
    port = backend.build_trainer(
        spec, spec.make_state(0, "float64"), load_implementation(backend, spec)
    )
    return spec, ReferenceTrainer(spec, state), port


def assert_close(ours: dict, theirs: dict, rel: float = REL) -> None:
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        scale = max(float(np.max(np.abs(value))), 1e-30)
        error = float(np.max(np.abs(ours[name] - value)))
        assert error <= rel * scale, (name, error, scale)


# -- resnet18: channels-last parameters, BatchNorm statistics, SGD momentum ---------------------


def resnet18_module():
    from cases.resnet18 import keras_impl

    return keras_impl


def test_resnet18_loaded_mid_training_takes_the_references_next_step():
    """Two steps in (momentum buffers and moving statistics made and moved), loaded: the next
    step's loss, parameters and BatchNorm state are the reference variant's, to rounding."""
    spec, reference, port = keras_cell("resnet18")
    ours, theirs = next_step_after_loading(port, reference, 2, REL)
    assert_close(ours.state, theirs.state)
    assert ours.state  # the statistics are compared, not an empty dict


def test_resnet18s_load_is_in_place():
    """The same model, variables and optimizer after ``load_state``: no rebuild."""
    spec, reference, port = keras_cell("resnet18")
    model, variables, optimizer = port.model, list(port.variables), port.optimizer
    slots = [id(v) for v in optimizer.variables]
    reference.run_step()
    port.load_state(reference.training_state())
    assert port.model is model and port.optimizer is optimizer
    assert all(a is b for a, b in zip(port.variables, variables, strict=True))
    assert [id(v) for v in optimizer.variables] == slots
    assert int(optimizer.iterations.numpy()) == 1


def test_resnet18_refuses_state_it_does_not_keep():
    spec, reference, port = keras_cell("resnet18")
    resume = reference.training_state()
    extra = TrainingState(0, resume.params, {}, {**resume.state, "head.running_mean": np.zeros(3)})
    with pytest.raises(StateNotLoadable, match="head.running_mean"):
        port.load_state(extra)
    lacking = TrainingState(0, resume.params, {}, {})
    with pytest.raises(StateNotLoadable, match="bn1.running_var"):
        port.load_state(lacking)


def test_resnet18_without_the_batchnorm_state_is_off(monkeypatch):
    """Planted: the moving statistics left at the port's own (step 0's: mean 0, variance 1)."""
    module = resnet18_module()
    real = module.load

    def skips_state(variables, canonical):
        if any(name.endswith(".running_mean") for name in variables):
            return
        real(variables, canonical)

    monkeypatch.setattr(module, "load", skips_state)
    with pytest.raises(AssertionError):
        test_resnet18_loaded_mid_training_takes_the_references_next_step()


def test_resnet18_with_kernels_transposed_by_numpy_is_off(monkeypatch):
    """Planted: OIHW kernels loaded with ``.T`` (WHIO: the right shape for square kernels,
    another convolution) instead of the layout's HWIO."""
    module = resnet18_module()

    def transposed(variables, canonical):
        for name, variable in variables.items():
            value = canonical[name]
            variable.assign(
                value.T if value.ndim == 4 else module.layout.param_to_channels_last(name, value)
            )

    monkeypatch.setattr(module, "load", transposed)
    with pytest.raises(AssertionError):
        test_resnet18_loaded_mid_training_takes_the_references_next_step()


def test_resnet18_with_momentum_transposed_by_numpy_is_off(monkeypatch):
    """Planted: the momentum buffers of the kernels converted with ``.T`` (WHIO) while the
    parameters go through the layout."""
    module = resnet18_module()

    def transposed(canonical):
        return {
            k: v.T
            if np.ndim(v) == 4
            else module.layout.param_to_channels_last(k.partition("/")[2], v)
            for k, v in canonical.items()
        }

    monkeypatch.setattr(module, "optimizer_to_channels_last", transposed)
    with pytest.raises(AssertionError):
        test_resnet18_loaded_mid_training_takes_the_references_next_step()


# -- the branching ports: the previous loss -------------------------------------------------------


def steps_to_first_w2a(spec) -> int:
    """How many reference steps before the first that takes head w2a (the port starts on
    w2b: its initial previous loss is the threshold)."""
    reference = ReferenceTrainer(spec, spec.make_state(0, "float64"))
    for t in range(spec.default_steps):
        if reference.prev_loss < spec.config["threshold"]:
            return t
        reference.run_step()
    raise AssertionError("the reference never takes w2a")


@pytest.mark.parametrize("case", ["dynamic_branching", "static_graph_step"])
def test_a_branching_port_loaded_mid_training_takes_the_references_branch(case):
    """Loaded where the reference's last loss is below the threshold, the port takes the
    reference's head (w2a), not the one its own previous loss picks."""
    spec, reference, port = keras_cell(case)
    ours, theirs = next_step_after_loading(port, reference, steps_to_first_w2a(spec), REL)
    assert ours.branch == theirs.branch == "w2a"


@pytest.mark.parametrize("case", ["dynamic_branching", "static_graph_step"])
def test_a_branching_port_that_keeps_its_own_previous_loss_is_off(case, monkeypatch):
    """Planted: ``prev_loss`` not taken (the port branches on its own last loss)."""
    from cases.dynamic_branching import keras_impl as dynamic
    from cases.static_graph_step import keras_impl as static

    module = dynamic if case == "dynamic_branching" else static
    monkeypatch.setattr(module.Trainer, "take_prev_loss", lambda self, loss: None)
    with pytest.raises(AssertionError):
        test_a_branching_port_loaded_mid_training_takes_the_references_branch(case)


def test_a_branching_port_refuses_a_state_without_a_previous_loss():
    spec, reference, port = keras_cell("dynamic_branching")
    resume = reference.training_state()
    without = TrainingState(resume.step, resume.params, resume.optimizer, {}, None)
    with pytest.raises(StateNotLoadable, match="previous loss"):
        port.load_state(without)


# -- the transformer block (example plugin): reshaped kernels, AdamW's moments ------------------

TRANSFORMER = "equiv_transformer.transformer_block.keras_impl"


@pytest.mark.parametrize("case", ["transformer_block", "transformer_block_defaults"])
def test_the_transformer_loaded_mid_training_takes_the_references_next_step(case):
    """AdamW's moments in the attention kernels' Keras shapes, its step count in
    ``iterations``: the loaded port's next step is the reference variant's."""
    spec, reference, port = keras_cell(case)
    next_step_after_loading(port, reference, 5, REL)


# Planted wrong layouts and moments of the transformer's Keras port (projections loaded
# torch-style, moments transposed): tests/test_keras_port.py, over the port's layout.


# -- minibatch: Keras loops keep their own data position -------------------------------------------


@pytest.mark.parametrize(
    ("case", "backend"),
    [
        ("minibatch", "keras.tensorflow"),
        ("minibatch_partial", "keras.tensorflow"),
        ("minibatch", "keras.fit"),
        ("minibatch_partial", "keras.fit"),
    ],
)
def test_a_minibatch_port_loaded_a_full_epoch_ahead_keeps_its_data_position(case, backend):
    """The port runs ``batches - 1`` steps on its own (its pipeline then stands before the last
    batch, the partial one in minibatch_partial), the reference one epoch more: loaded with the
    reference's state, the port's next step is the reference's on the same batch, read from
    the port's own pipeline. ``model.fit`` assigns the state in its thread, between batches."""
    spec, reference, port = keras_cell(case, backend)
    batches = math.ceil(spec.config["N"] / spec.config["batch_size"])
    for _ in range(batches - 1):
        port.run_step()
    next_step_after_loading(port, reference, 2 * batches - 1, REL)


def test_fit_with_the_state_never_assigned_is_off(monkeypatch):
    """Planted: ``StateLoader`` keeps the state and never assigns it (fit steps on from its
    own parameters)."""
    from cases.minibatch import keras_fit_impl

    monkeypatch.setattr(
        keras_fit_impl.StateLoader, "on_train_batch_begin", lambda self, batch, logs=None: None
    )
    with pytest.raises(AssertionError):
        test_a_minibatch_port_loaded_a_full_epoch_ahead_keeps_its_data_position(
            "minibatch", "keras.fit"
        )


def test_fit_refuses_non_trainable_state():
    spec, reference, port = keras_cell("minibatch", "keras.fit")
    resume = reference.training_state()
    with pytest.raises(StateNotLoadable, match="bn.running_mean"):
        port.load_state(TrainingState(0, resume.params, {}, {"bn.running_mean": np.zeros(2)}))
