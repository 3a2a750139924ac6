"""The reference is the ground truth, so it is checked itself: its hand-written gradients
against central finite differences of its own loss, in float64, for every case
(``equiv.reference.gradcheck.check_gradients``)."""

import numpy as np
import pytest

from equiv.contract.case import all_cases
from equiv.reference import layers
from equiv.reference.gradcheck import check_gradients
from equiv.reference.numerics import ForcedBranch
from equiv.reference.trainer import ReferenceTrainer

#: resnet18's reference (11M parameters, a second a loss evaluation here) is checked along
#: random directions with its masks frozen, in tests/test_resnet18_reference.py
#: every case with a numpy reference (a case whose reference is a port has none to check)
CASES = [
    name for name, spec in all_cases().items() if name != "resnet18" and spec.reference_port is None
]


def small_state(spec):
    """The case's own draw, at its own sizes: finite differences on a sample of entries."""
    return spec.make_state(seed=3, dtype="float64")


#: central differences per case: about this many loss evaluations (two per sampled entry),
#: so that resnet18's 62 arrays check 2 entries each and a small case 12 each
EVALUATIONS = 250


def check_reference(module, params, data, cfg, prev_loss=None) -> int:
    """Gradients at ``params`` against central differences, the branch held at the one the
    reference takes there (``ForcedBranch``): a difference quotient across a branch switch
    measures the switch, not a gradient. A reference with state (resnet18's BatchNorm)
    returns a fourth value; training mode does not read the running statistics."""
    _, grads, branch, *_ = module.forward_backward(params, data, cfg, prev_loss)
    numerics = ForcedBranch(branch) if branch is not None else None

    def loss(moved):
        if numerics is None:
            return module.forward_backward(moved, data, cfg, prev_loss)[0]
        return module.forward_backward(moved, data, cfg, prev_loss, numerics)[0]

    samples = max(2, min(12, EVALUATIONS // (2 * len(params))))
    return check_gradients(loss, params, grads, samples=samples)


@pytest.mark.parametrize("case", CASES)
def test_gradients_match_central_differences(case):
    spec = all_cases()[case]
    state = small_state(spec)
    trainer = ReferenceTrainer(spec, state)
    # Two steps in, so that branching cases have a real previous loss and the state is not
    # the initial draw only.
    trainer.run_step()
    checked = check_reference(
        trainer.module, trainer.params, state.data, state.config, trainer.prev_loss
    )
    assert checked >= 2 * len(trainer.params)


def test_a_forced_branch_is_taken_and_checked_at_either_branch():
    """The finite-difference check holds the branch with ``ForcedBranch``: forced onto the
    branch the reference would not take, the loss is the other layer's and its gradient
    lands on that layer, and the check passes there too."""
    from cases.dynamic_branching import reference

    state = small_state(all_cases()["dynamic_branching"])
    cfg = {**state.config}
    own = reference.choose_branch(0.0, cfg)
    other = {"w2a": "w2b", "w2b": "w2a"}[own]
    loss, grads, branch = reference.forward_backward(state.params, state.data, cfg, 0.0)
    forced_loss, forced_grads, forced = reference.forward_backward(
        state.params, state.data, cfg, 0.0, ForcedBranch(other)
    )
    assert (branch, forced) == (own, other) and forced_loss != loss
    assert not forced_grads[own].any() and forced_grads[other].any()
    params = {k: v.copy() for k, v in state.params.items()}
    check_gradients(
        lambda p: reference.forward_backward(p, state.data, cfg, 0.0, ForcedBranch(other))[0],
        params,
        forced_grads,
        samples=4,
    )


def test_a_wrong_sigmoid_backward_is_caught_by_the_finite_difference_check(monkeypatch):
    """The check above can fail: with y*(1+y) as the sigmoid's backward in
    ``equiv.reference.layers``,
    sigmoid_custom_op's reference is rejected; the right one passes."""
    from cases.sigmoid_custom_op import reference

    state = small_state(all_cases()["sigmoid_custom_op"])
    right = layers.sigmoid

    def wrong_sigmoid(h):
        y, _ = right(h)
        return y, lambda gy: gy * y * (1.0 + y)

    monkeypatch.setattr(layers, "sigmoid", wrong_sigmoid)
    with pytest.raises(AssertionError, match="d loss / d w1"):
        check_reference(reference, state.params, state.data, state.config)
    monkeypatch.setattr(layers, "sigmoid", right)
    check_reference(reference, state.params, state.data, state.config)


def test_reference_is_bitwise_deterministic():
    spec = all_cases()["dynamic_branching"]
    runs = []
    for _ in range(2):
        trainer = ReferenceTrainer(spec, spec.make_state(0, "float64"))
        for _ in range(20):
            trainer.run_step()
        runs.append(trainer.record())
    assert runs[0].loss == runs[1].loss
    for k in runs[0].params:
        assert np.array_equal(runs[0].params[k], runs[1].params[k])


def keras_sequential_before_issue_14(params, data, flip=None):
    """keras_sequential's reference as it was written by hand before ``equiv.reference.layers``,
    with
    the calibration's ``Flip`` passed in directly (the stored fixtures' bits)."""
    from equiv.reference.kinks import relu_mask

    x, y = data["x"], data["y"]
    h = x @ params["w1"] + params["b1"]
    active = relu_mask(h, flip, x, params, "w1", "b1")
    h_relu = h * active
    y_pred = h_relu @ params["w2"] + params["b2"]
    diff = y_pred - y
    loss = np.mean(diff**2)
    grad_y_pred = 2.0 * diff / diff.size
    grad_w2 = h_relu.T @ grad_y_pred
    grad_b2 = grad_y_pred.sum(axis=0)
    grad_h = (grad_y_pred @ params["w2"].T) * active
    grad_w1 = x.T @ grad_h
    grad_b1 = grad_h.sum(axis=0)
    return loss, {"w1": grad_w1, "b1": grad_b1, "w2": grad_w2, "b2": grad_b2}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_composed_reference_has_the_hand_written_ones_bits(dtype):
    """``EXACT`` and the calibration's flipping numerics give, bit for bit, what the
    hand-written reference gave with no flip and with the same ``Flip``: a reordered
    operation would move the stored trajectories and calibrations."""
    from cases.keras_sequential import reference
    from equiv.reference import numerics
    from equiv.reference.kinks import Flip

    state = all_cases()["keras_sequential"].make_state(2, dtype)
    params, data = state.params, state.data
    recorded = numerics.recording()
    reference.forward_backward(params, data, state.config, numerics=recorded)
    # a radius large enough that units really flip (eps32 alone flips none at step 0)
    flipper = numerics.flipping(1e-2, recorded)
    old_flip = Flip(1e-2, masks=recorded.flip.masks)
    for new, old in ((numerics.EXACT, None), (flipper, old_flip)):
        loss, grads, _ = reference.forward_backward(params, data, state.config, numerics=new)
        old_loss, old_grads = keras_sequential_before_issue_14(params, data, old)
        assert loss.dtype == np.dtype(dtype) and loss.tobytes() == old_loss.tobytes()
        for k in grads:
            assert grads[k].dtype == old_grads[k].dtype
            assert grads[k].tobytes() == old_grads[k].tobytes(), k
    h = data["x"] @ params["w1"] + params["b1"]
    flipped = flipper.relu_mask(h, data["x"], params, "w1", "b1") != (h > 0)
    assert flipped.any()


def test_a_reordered_loss_gradient_changes_the_bits(monkeypatch):
    """The bit comparison above can fail: mse's gradient as diff * (2 / n), algebraically the
    same as 2 * diff / n, gives other bits."""
    from cases.keras_sequential import reference

    state = all_cases()["keras_sequential"].make_state(2, "float64")
    right = layers.mse

    def reordered_mse(pred, target, reduction="mean"):
        loss, _ = right(pred, target, reduction)
        diff = pred - target
        return loss, lambda g=1.0: diff * (2.0 * g / diff.size)

    monkeypatch.setattr(layers, "mse", reordered_mse)
    _, grads, _ = reference.forward_backward(state.params, state.data, state.config)
    _, old = keras_sequential_before_issue_14(state.params, state.data)
    assert any(grads[k].tobytes() != old[k].tobytes() for k in grads)
    scale = np.abs(old["w1"]).max()  # the same numbers up to rounding
    np.testing.assert_allclose(grads["w1"], old["w1"], rtol=0, atol=1e-12 * scale)
