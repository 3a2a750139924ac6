"""Properties the case specs promise in their docstrings."""

import numpy as np

from equiv.contract.case import all_cases, get_case
from equiv.reference.trainer import ReferenceTrainer
from equiv.tolerance.policy import calibrate


def test_the_five_seed_cases_exist():
    assert set(all_cases()) >= {
        "two_layer_mlp",
        "sigmoid_custom_op",
        "dynamic_branching",
        "static_graph_step",
        "keras_sequential",
    }


def test_seeding_is_per_case_and_identical_across_dtypes():
    spec = get_case("two_layer_mlp")
    a = spec.make_state(0, "float64")
    b = spec.make_state(0, "float32")
    assert np.array_equal(a.params["w1"].astype("float32"), b.params["w1"])
    other = get_case("dynamic_branching").make_state(0, "float64")
    assert not np.array_equal(a.data["x"], other.data["x"])
    assert np.array_equal(a.data["x"], spec.make_state(0, "float64").data["x"])


def test_sigmoid_is_not_saturated_so_the_custom_backward_matters():
    spec = get_case("sigmoid_custom_op")
    state = spec.make_state(0, "float64")
    y = 1 / (1 + np.exp(-(state.data["x"] @ state.params["w1"])))
    derivative = y * (1 - y)
    assert np.median(derivative) > 0.1  # the seed's scale would give ~0


def test_dynamic_branching_takes_both_branches_by_default():
    for name in ("dynamic_branching", "static_graph_step"):
        spec = get_case(name)
        cal = calibrate(spec, 0, spec.default_steps, "float64")
        assert cal.branches[0] == "w2b"
        assert {"w2a", "w2b"} <= set(cal.branches)


def test_keras_sequential_updates_are_visible_in_float32():
    spec = get_case("keras_sequential")
    state = spec.make_state(0, "float32")
    trainer = ReferenceTrainer(spec, state)
    trainer.run_step()
    changed = trainer.record().params["w1"] != state.params["w1"]
    assert changed.mean() > 0.9
