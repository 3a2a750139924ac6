"""Planted bugs must turn the right cells to ``fail`` with the right first divergence.

Each mutant changes one line of a correct implementation (as data, see
``equiv.backends.implementations``); the original file is untouched.
"""

import pytest

from equiv.backends.implementations import ImplSource, Patch
from equiv.backends.registry import get_backend
from equiv.contract.case import get_case
from equiv.contract.records import Cell
from equiv.running.runner import RunOptions, run_cell

OPTIONS = RunOptions.verdict_only(steps=6)


def needs(backend_id):
    reason = get_backend(backend_id).availability()
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def mutant(case, backend, *patches):
    module = get_backend(backend).implementation_module(get_case(case))
    return ImplSource(module, tuple(Patch(old, new) for old, new in patches))


NO_ZERO_GRAD = (
    "            self.w1.grad.zero_()\n            self.w2.grad.zero_()\n",
    "",
)
WRONG_SIGMOID_BACKWARD = ("return grad_y * y * (1.0 - y)", "return grad_y * y * (1.0 + y)")


@pytest.mark.parametrize("backend", ["torch.eager", "torch.jit", "torch.compile"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_missing_zero_grad_diverges_in_gradients_at_step_1(backend, dtype):
    if reason := get_backend(backend).availability():
        pytest.skip(reason)
    impl = mutant("two_layer_mlp", backend, NO_ZERO_GRAD)
    result = run_cell(Cell("two_layer_mlp", backend, dtype), OPTIONS, impl=impl)
    assert result.status == "fail", result.reason
    div = result.first_divergence
    assert (div.step, div.quantity, div.phase) == (1, "grads", "backward")


def test_missing_zero_grad_teacher_forced_in_the_running_port_is_a_one_step_bug():
    """The running port keeps its gradient buffers (no canonical state): loaded with the
    reference's state at step 1, its step adds the new gradient to the stale one at once. The
    bug lives in the step's own code, and in-place teacher forcing says so."""
    if reason := get_backend("torch.eager").availability():
        pytest.skip(reason)
    impl = mutant("two_layer_mlp", "torch.eager", NO_ZERO_GRAD)
    result = run_cell(Cell("two_layer_mlp", "torch.eager", "float64"), OPTIONS, impl=impl)
    where = result.localization
    assert where.step == 1 and where.forced, where.diagnosis
    assert where.diagnosis.startswith("a one-step bug"), where.diagnosis
    assert where.forced_divergence.quantity == "grads", where.forced_divergence


#: a port that cannot load a state (a plugin's, say): localization builds a fresh one
WITHOUT_LOAD_STATE = (
    "    def run_step(self):\n        loss = self.loss_fn(",
    "    load_state = None\n\n    def run_step(self):\n        loss = self.loss_fn(",
)


def test_missing_zero_grad_teacher_forced_on_a_fresh_port_is_not_a_one_step_bug():
    """Without ``load_state`` localization builds a fresh port from the reference's parameters
    at step 1, whose first step (nothing accumulated yet) is right, so the harm is in what the
    run carried."""
    if reason := get_backend("torch.eager").availability():
        pytest.skip(reason)
    impl = mutant("two_layer_mlp", "torch.eager", NO_ZERO_GRAD, WITHOUT_LOAD_STATE)
    result = run_cell(Cell("two_layer_mlp", "torch.eager", "float64"), OPTIONS, impl=impl)
    where = result.localization
    assert where.step == 1 and where.forced, where.diagnosis
    assert where.diagnosis.startswith("not a one-step bug"), where.diagnosis


@pytest.mark.parametrize("backend", ["torch.eager", "torch.jit", "torch.compile"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_wrong_custom_sigmoid_backward_diverges_in_gradients_at_step_0(backend, dtype):
    if reason := get_backend(backend).availability():
        pytest.skip(reason)
    impl = mutant("sigmoid_custom_op", backend, WRONG_SIGMOID_BACKWARD)
    result = run_cell(Cell("sigmoid_custom_op", backend, dtype), OPTIONS, impl=impl)
    assert result.status == "fail", result.reason
    div = result.first_divergence
    assert (div.step, div.quantity, div.name) == (0, "grads", "w1")


def test_the_unpatched_implementation_passes_the_same_short_run():
    """The mutants fail because of the planted change, not because of the short run."""
    if reason := get_backend("torch.eager").availability():
        pytest.skip(reason)
    for case in ("two_layer_mlp", "sigmoid_custom_op"):
        result = run_cell(Cell(case, "torch.eager", "float32"), OPTIONS)
        assert result.status == "pass", result.reason


def test_a_patch_that_does_not_apply_is_an_error_not_a_pass():
    impl = ImplSource("cases.two_layer_mlp.torch_impl", (Patch("no such line", ""),))
    result = run_cell(Cell("two_layer_mlp", "torch.eager", "float64"), OPTIONS, impl=impl)
    assert result.status in ("error", "skip")


@needs("torch.manual")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_hand_written_backward_without_the_relu_mask_diverges_in_grads_w1_at_step_0(dtype):
    """torch.manual runs the seed's first program (gradients by hand, no autograd): a
    backward that forgets ``grad_h[h < 0] = 0`` is wrong in w1's gradient at once, while w2's
    is still right."""
    impl = mutant("two_layer_mlp", "torch.manual", ("        grad_h[h < 0] = 0\n", ""))
    result = run_cell(Cell("two_layer_mlp", "torch.manual", dtype), OPTIONS, impl=impl)
    assert result.status == "fail", result.reason
    div = result.first_divergence
    assert (div.step, div.quantity, div.name) == (0, "grads", "w1")
    assert run_cell(Cell("two_layer_mlp", "torch.manual", dtype), OPTIONS).status == "pass"
