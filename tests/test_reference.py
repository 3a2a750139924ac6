"""The reference is the ground truth, so it is checked itself: its hand-written gradients
against central finite differences of its own loss, in float64, for every case."""

import numpy as np
import pytest

from equiv.case import all_cases
from equiv.reference import ReferenceTrainer

CASES = list(all_cases())


def small_state(spec):
    """The case's own draw, at its own sizes: finite differences on a sample of entries."""
    return spec.make_state(seed=3, dtype="float64")


def loss_at(module, params, data, cfg, prev_loss, branch):
    loss, _, _ = module.forward_backward(params, data, cfg, prev_loss, branch)
    return float(loss)


@pytest.mark.parametrize("case", CASES)
def test_gradients_match_central_differences(case):
    spec = all_cases()[case]
    state = small_state(spec)
    trainer = ReferenceTrainer(spec, state)
    # Two steps in, so that branching cases have a real previous loss and the state is not
    # the initial draw only.
    trainer.run_step()
    params = {k: v.copy() for k, v in trainer.params.items()}
    prev = trainer.prev_loss
    module = trainer.module
    loss, grads, branch = module.forward_backward(params, state.data, state.config, prev, None)
    rng = np.random.default_rng(0)
    checked = 0
    for name, value in params.items():
        g = grads[name]
        flat = rng.choice(value.size, size=min(12, value.size), replace=False)
        for index in flat:
            idx = np.unravel_index(index, value.shape)
            h = 1e-5 * max(1.0, abs(value[idx]))
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][idx] += h
            minus[name][idx] -= h
            lp = loss_at(module, plus, state.data, state.config, prev, branch)
            lm = loss_at(module, minus, state.data, state.config, prev, branch)
            numeric = (lp - lm) / (2 * h)
            # Central differences err by O(h^2 f''') plus rounding O(eps |f| / h).
            scale = max(abs(numeric), abs(g[idx]), 1e-8 * abs(float(loss)) / h)
            assert abs(numeric - g[idx]) <= 1e-5 * scale, (name, idx, numeric, g[idx])
            checked += 1
    assert checked >= 2 * len(params)


def test_a_wrong_backward_is_caught_by_the_finite_difference_check():
    """The check above can fail: a reference with y*(1+y) as sigmoid backward is rejected."""
    from cases.sigmoid_custom_op import reference

    spec = all_cases()["sigmoid_custom_op"]
    state = small_state(spec)
    original = reference.sigmoid_backward
    try:
        reference.sigmoid_backward = lambda grad_y, y: grad_y * y * (1.0 + y)
        with pytest.raises(AssertionError):
            _check_one(spec, state)
    finally:
        reference.sigmoid_backward = original
    _check_one(spec, state)  # and the right one passes


def _check_one(spec, state):
    from cases.sigmoid_custom_op import reference

    params = {k: v.copy() for k, v in state.params.items()}
    loss, grads, _ = reference.forward_backward(params, state.data, state.config)
    idx = (3, 7)
    h = 1e-5
    plus = {k: v.copy() for k, v in params.items()}
    minus = {k: v.copy() for k, v in params.items()}
    plus["w1"][idx] += h
    minus["w1"][idx] -= h
    lp, _, _ = reference.forward_backward(plus, state.data, state.config)
    lm, _, _ = reference.forward_backward(minus, state.data, state.config)
    numeric = (lp - lm) / (2 * h)
    assert abs(numeric - grads["w1"][idx]) <= 1e-5 * max(abs(numeric), 1e-3)


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
