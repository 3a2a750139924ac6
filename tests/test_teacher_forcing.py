"""Training state as canonical data: the reference saves and resumes it bit for bit, a torch
port loads it in place, and a failing Adam cell is teacher-forced from it.

Before, the optimizer's state was no part of the canonical state: a failing Adam or momentum
cell was never teacher-forced ("not teacher-forced: the optimizer's state is not part of the
canonical state"), so a bug that starts late could not be told from drift.
"""

from __future__ import annotations

from dataclasses import replace
from importlib.util import find_spec

import numpy as np
import pytest

from equiv.backends.implementations import ImplSource, Patch, load_implementation
from equiv.backends.registry import get_backend
from equiv.contract.case import get_case
from equiv.contract.records import Cell, TrainingState
from equiv.contract.trainer import StateNotLoadable
from equiv.reference import optim
from equiv.reference.trainer import ReferenceTrainer
from equiv.running.runner import RunOptions, run_cell

#: cases whose reference carries optimizer state (Adam; SGD with momentum), model state
#: (BatchNorm), a loss for its branch, or a data position
RESUMABLE = ["keras_sequential_adam", "parallel_blocks", "dynamic_branching", "minibatch_partial"]


def reference_run(spec, state, steps: int) -> ReferenceTrainer:
    trainer = ReferenceTrainer(spec, state)
    for _ in range(steps):
        trainer.run_step()
    return trainer


def assert_same_records(a, b) -> None:
    assert a.loss == b.loss
    for group in ("grads", "params", "state"):
        for name, value in getattr(a, group).items():
            np.testing.assert_array_equal(value, getattr(b, group)[name], err_msg=name)


def next_step_after_loading(port, reference: ReferenceTrainer, steps: int, rel: float):
    """Run ``reference`` ``steps`` steps, load its training state into ``port``, step both
    once: their records agree to ``rel`` (relative) in the loss and every parameter."""
    for _ in range(steps):
        reference.run_step()
    port.load_state(reference.training_state())
    port.run_step()
    reference.run_step()
    ours, theirs = port.record(), reference.record()
    assert abs(ours.loss - theirs.loss) <= rel * abs(theirs.loss)
    for name, value in theirs.params.items():
        scale = max(float(np.max(np.abs(value))), 1e-30)
        error = float(np.max(np.abs(ours.params[name] - value)))
        assert error <= rel * scale, (name, error)
    return ours, theirs


@pytest.mark.parametrize("case", RESUMABLE)
def test_the_reference_resumes_from_its_training_state_bit_for_bit(case):
    spec = get_case(case)
    state = spec.make_state(0, "float64")
    straight = reference_run(spec, state, 9)
    first = reference_run(spec, state, 5)
    resumed = ReferenceTrainer(spec, replace(state, resume=first.training_state()))
    assert resumed.t == 5
    for _ in range(4):
        resumed.run_step()
    assert_same_records(resumed.record(), straight.record())


def test_resnet18s_momentum_and_batchnorm_state_resume_bit_for_bit():
    spec = get_case("resnet18")
    state = spec.make_state(0, "float64")
    straight = reference_run(spec, state, 3)
    first = reference_run(spec, state, 2)
    saved = first.training_state()
    assert {k.split("/")[0] for k in saved.optimizer} == {"momentum"}
    assert saved.state
    resumed = ReferenceTrainer(spec, replace(state, resume=saved))
    resumed.run_step()
    assert_same_records(resumed.record(), straight.record())


def test_a_training_state_without_adams_step_count_does_not_resume(monkeypatch):
    """Planted: Adam's state without its step count (the bias corrections restart)."""
    saving = optim.Adam.state_dict

    def without_t(self, copy=True):
        return {k: v for k, v in saving(self, copy).items() if k != "t"}

    monkeypatch.setattr(optim.Adam, "state_dict", without_t)
    with pytest.raises(AssertionError):
        test_the_reference_resumes_from_its_training_state_bit_for_bit("keras_sequential_adam")


# -- a torch port loads the state in place ------------------------------------------------------


def torch_trainer(case: str, state):
    backend = get_backend("torch.eager")
    if reason := backend.availability():
        pytest.skip(reason)
    backend.configure(1)
    spec = get_case(case)
    return backend.build_trainer(spec, state, load_implementation(backend, spec))


@pytest.mark.parametrize("case", ["parallel_blocks", "keras_sequential_adam"])
def test_a_torch_port_loaded_mid_training_takes_the_references_next_step(case):
    """Adam's moments and step count go into torch.optim's state: the port's next step is the
    reference's (float64: to rounding, far below the cell's tolerance)."""
    spec = get_case(case)
    state = spec.make_state(0, "float64")
    next_step_after_loading(torch_trainer(case, state), ReferenceTrainer(spec, state), 6, 1e-12)


def test_without_adams_step_count_the_loaded_port_is_off(monkeypatch):
    """Planted: the step count left out of torch.optim's state (torch then starts t at 1)."""
    import equiv.support.torch as support

    real = support.load_optimizer

    def forgets_t(backend, named, optimizer, canonical):
        real(backend, named, optimizer, canonical)
        for param_state in optimizer.state.values():
            param_state["step"].zero_()

    monkeypatch.setattr(support, "load_optimizer", forgets_t)
    with pytest.raises(AssertionError):
        test_a_torch_port_loaded_mid_training_takes_the_references_next_step("parallel_blocks")


@pytest.mark.parametrize(
    "case", ["two_layer_mlp", "dynamic_branching", "static_graph_step", "transformer_block"]
)
def test_torch_ports_of_every_shape_load_the_state_in_place(case):
    """Tensors updated by hand (the previous loss too, where a branch is decided on it: a
    float, or a tensor in static_graph_step), and the transformer's AdamW moments, fused into
    ``in_proj_weight`` as its parameters are."""
    spec = get_case(case)
    state = spec.make_state(0, "float64")
    next_step_after_loading(torch_trainer(case, state), ReferenceTrainer(spec, state), 5, 1e-10)


def test_the_transformers_fused_moments_must_be_loaded(monkeypatch):
    """Planted: the AdamW state left empty (torch restarts Adam: step 1, zero moments)."""
    import equiv.support.torch as support

    def forgets(backend, named, optimizer, canonical):
        optimizer.state.clear()

    monkeypatch.setattr(support, "load_optimizer", forgets)
    with pytest.raises(AssertionError):
        test_torch_ports_of_every_shape_load_the_state_in_place("transformer_block")


def test_a_port_that_cannot_load_model_state_says_which():
    state = get_case("parallel_blocks").make_state(0, "float64")
    trainer = torch_trainer("parallel_blocks", state)
    resume = TrainingState(0, state.params, {}, {"bn1/running_mean": np.zeros(3)})
    with pytest.raises(StateNotLoadable, match="bn1/running_mean"):
        trainer.load_state(resume)


# -- localization: a failing Adam cell is teacher-forced ------------------------------------------

BUILT = "    return port(\n"
BUILT_END = "        optimizer=lambda params: make_optimizer(params, cfg),\n    )\n"


def parallel_blocks_with(body: str) -> ImplSource:
    """parallel_blocks' torch port with ``body`` run before each step (``self`` is the
    trainer; ``self.calls`` counts the steps from 1)."""
    backend = get_backend("torch.eager")
    module = backend.implementation_module(get_case("parallel_blocks"))
    planted = (
        "\n\ndef planted(self):\n"
        "    step = self.run_step\n\n"
        "    def run_step():\n"
        "        self.calls = getattr(self, 'calls', 0) + 1\n"
        f"{body}"
        "        step()\n\n"
        "    self.run_step = run_step\n"
        "    return self\n"
    )
    return ImplSource(
        module,
        (
            Patch(BUILT, "    return planted(port(\n"),
            Patch(BUILT_END, BUILT_END.replace("    )\n", "    ))\n") + planted),
        ),
    )


def failing_cell(impl: ImplSource, steps: int = 8):
    if reason := get_backend("torch.eager").availability():
        pytest.skip(reason)
    options = RunOptions.verdict_only(steps=steps)
    result = run_cell(Cell("parallel_blocks", "torch.eager", "float64"), options, impl=impl)
    assert result.status == "fail", result.reason
    return result


def test_an_adam_cell_whose_learning_rate_doubles_late_is_a_one_step_bug():
    """From the reference's state at step 5 (Adam's moments and step count loaded into the
    running port, which keeps its doubled learning rate) the step is wrong at once."""
    doubled = (
        "        if self.calls == 6:\n"
        "            for group in self.optimizer.param_groups:\n"
        "                group['lr'] *= 2\n"
    )
    result = failing_cell(parallel_blocks_with(doubled))
    where = result.localization
    assert (where.step, where.quantity) == (5, "params")
    assert where.forced, where.diagnosis
    assert where.diagnosis.startswith("a one-step bug"), where.diagnosis
    assert where.forced_divergence is not None


def test_a_one_step_bug_from_step_100_of_an_adam_cell_is_teacher_forced_there():
    """Deep into training (Adam's moments and step count at 100): a learning-rate schedule
    that steps at the wrong time (doubled from step 100) is found wrong in one step from the
    reference's own state, in the running port (which keeps its schedule)."""
    late_schedule = (
        "        for group in self.optimizer.param_groups:\n"
        "            group['lr'] = 2e-4 if self.calls >= 101 else 1e-4\n"
    )
    result = failing_cell(parallel_blocks_with(late_schedule), steps=102)
    where = result.localization
    assert (where.step, where.quantity) == (100, "params"), result.reason
    assert where.forced, where.diagnosis
    assert where.diagnosis.startswith("a one-step bug"), where.diagnosis


def test_an_adam_cell_whose_moments_are_reset_once_is_not_a_one_step_bug():
    """The moments cleared at one step only: from the reference's state there, the running
    port (past that step) computes the step right, so the harm is in the state it carried."""
    reset = "        if self.calls == 6:\n            self.optimizer.state.clear()\n"
    result = failing_cell(parallel_blocks_with(reset))
    where = result.localization
    assert where.step == 5 and where.forced, where.diagnosis
    assert where.diagnosis.startswith("not a one-step bug"), where.diagnosis


def test_resnet18s_torch_port_loaded_mid_training_takes_the_references_next_step():
    """Momentum buffers and BatchNorm's running statistics go in by torchvision's names (the
    canonical ones): the loaded port's next step is the float64 reference's, to rounding."""
    if find_spec("torchvision") is None:  # imported through equiv.support.torchvision only
        pytest.skip("torchvision is not installed")
    spec = get_case("resnet18")
    state = spec.make_state(0, "float64")
    ours, theirs = next_step_after_loading(
        torch_trainer("resnet18", state), ReferenceTrainer(spec, state), 2, 1e-9
    )
    for name, value in theirs.state.items():
        scale = max(float(np.max(np.abs(value))), 1e-30)
        error = float(np.max(np.abs(ours.state[name] - value)))
        assert error <= 1e-9 * scale, (name, error)


# -- a Keras port loads the state in place ---------------------------------------------------------


def keras_cell(case: str):
    """A keras.tensorflow float64 port and the reference that its declared explanation says it
    computes (Keras's Adam is the epsilon-hat form: the proven variant, not the plain one)."""
    from equiv.checking.verdict import declared_explanation

    backend = get_backend("keras.tensorflow")
    if reason := backend.availability():
        pytest.skip(reason)
    backend.configure(1)
    spec = get_case(case)
    explanation = declared_explanation(spec, backend, "float64")
    variant = explanation.variant_key() if explanation else ()
    state = spec.make_state(0, "float64", variant)
    port = backend.build_trainer(
        spec, spec.make_state(0, "float64"), load_implementation(backend, spec)
    )
    return spec, state, port


@pytest.mark.parametrize("case", ["parallel_blocks", "keras_sequential_adam", "keras_sequential"])
def test_a_keras_port_loaded_mid_training_takes_the_references_next_step(case):
    """Adam's moments and step count go into Keras's slots and ``iterations``: the loaded
    port's next step is its reference's, to rounding."""
    spec, state, port = keras_cell(case)
    next_step_after_loading(port, ReferenceTrainer(spec, state), 6, 1e-10)


def test_a_keras_port_without_the_loaded_step_count_is_off(monkeypatch):
    """Planted: ``iterations`` left at the port's own count (its bias corrections are a step's
    worth off)."""
    import equiv.support.keras as support

    real = support.load_optimizer

    def keeps_iterations(optimizer, named, canonical, step):
        kept = int(optimizer.iterations.numpy())
        real(optimizer, named, canonical, step)
        optimizer.iterations.assign(kept)

    monkeypatch.setattr(support, "load_optimizer", keeps_iterations)
    with pytest.raises(AssertionError):
        test_a_keras_port_loaded_mid_training_takes_the_references_next_step("parallel_blocks")


def test_keras_sgd_velocity_is_the_torch_form_buffer_times_minus_lr():
    """Keras keeps m <- momentum * m - lr * g where torch keeps b <- momentum * b + g: loaded
    as -lr * b, the next Keras step is the reference's."""
    backend = get_backend("keras.tensorflow")
    if reason := backend.availability():
        pytest.skip(reason)
    backend.configure(1)
    import keras

    from equiv.support.keras import load_optimizer

    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(3, 2)) for _ in range(4)]
    # a momentum and rate exact in float32: Keras on TensorFlow casts the Python float through
    # float32 first (as it does Adam's betas), a difference of its own that this test is not of
    reference = optim.SGD({"lr": 0.0625, "momentum": 0.875})
    params = {"w": rng.normal(size=(3, 2))}
    for g in grads[:3]:
        params = reference.step(params, {"w": g})
    variable = keras.Variable(params["w"], dtype="float64")
    with backend.floatx("float64"):  # else the learning rate is a float32 variable
        optimizer = keras.optimizers.SGD(learning_rate=0.0625, momentum=0.875)
        optimizer.build([variable])
    assert float(optimizer.learning_rate.numpy()) == 0.0625
    load_optimizer(optimizer, {"w": variable}, reference.state_dict(), 3)
    optimizer.apply_gradients([(keras.ops.convert_to_tensor(grads[3]), variable)])
    expected = reference.step(params, {"w": grads[3]})["w"]
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-12, atol=0)


def test_a_cell_with_a_data_pipeline_is_teacher_forced_at_its_own_position():
    """minibatch: the running port's loader is past the failing step when the run ends, and
    its position is its own, so a fresh port's own steps take its loader there before it loads
    the reference's state: a learning rate doubled from step 5 is a one-step bug at step 5."""
    backend = get_backend("torch.eager")
    module = backend.implementation_module(get_case("minibatch"))
    doubled = (
        "    def run_step(self):\n"
        "        self.calls = getattr(self, 'calls', 0) + 1\n"
        "        if self.calls == 6:\n"
        "            for group in self.optimizer.param_groups:\n"
        "                group['lr'] *= 2\n"
        "        x_batch, y_batch = next(self.batches)\n"
    )
    impl = ImplSource(
        module,
        (
            Patch(
                "    def run_step(self):\n        x_batch, y_batch = next(self.batches)\n", doubled
            ),
        ),
    )
    if reason := backend.availability():
        pytest.skip(reason)
    options = RunOptions.verdict_only(steps=8)
    result = run_cell(Cell("minibatch", "torch.eager", "float64"), options, impl=impl)
    assert result.status == "fail", result.reason
    where = result.localization
    assert (where.step, where.forced) == (5, True), where.diagnosis
    assert where.diagnosis.startswith("a one-step bug"), where.diagnosis
    # from the right batch, the loss and the gradients agree and only the update is off (the
    # running port's loader, at step 8, would give another batch: the loss would be off)
    assert where.forced_divergence.quantity == "params", where.forced_divergence
