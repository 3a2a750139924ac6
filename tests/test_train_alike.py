"""``equiv.testing.assert_train_alike``: ports of one model compared in a plain pytest
function, no package, no plugin, no numpy reference."""

from __future__ import annotations

import pytest

from equiv import testing
from equiv.contract.case import case_catalog, get_case

pytest.importorskip("torch")
pytest.importorskip("tensorflow")


def _mlp():
    spec = get_case("two_layer_mlp")
    from cases.two_layer_mlp import tf_impl, torch_impl

    return spec, {"torch_impl": torch_impl.build, "tf_impl": tf_impl.build}


def test_two_ports_train_alike_against_the_torch_port():
    spec, ports = _mlp()
    results = testing.assert_train_alike(
        "my_mlp",
        ports=ports,
        draw=spec.draw,
        config=spec.config,
        param_names=spec.param_names,
        reference="torch.eager",
        backends=["torch.eager", "tf.eager"],
        steps=3,
    )
    assert {r.status for r in results} == {"pass"}
    assert len(results) == 4 and all(r.compared_steps == 3 for r in results)
    assert "my_mlp" not in case_catalog().cases  # registered only while it ran


def test_a_port_that_trains_differently_fails_with_the_table():
    spec, ports = _mlp()
    from cases.two_layer_mlp import tf_impl

    def wrong_lr(state, backend):
        config = {**state.config, "lr": state.config["lr"] * 2}
        return tf_impl.build(type(state)(state.data, state.params, config, state.dtype), backend)

    with pytest.raises(AssertionError) as info:
        testing.assert_train_alike(
            "my_mlp_wrong",
            ports={**ports, "tf_impl": wrong_lr},
            draw=spec.draw,
            config=spec.config,
            param_names=spec.param_names,
            reference="torch.eager",
            backends=["torch.eager", "tf.eager"],
            dtypes=("float64",),
            steps=3,
        )
    text = str(info.value)
    assert "my_mlp_wrong-tf.eager-float64: fail at step 0 params" in text
    assert "my_mlp_wrong-torch.eager-float64: pass" in text


def test_a_backend_without_a_port_is_a_one_line_error():
    spec, ports = _mlp()
    with pytest.raises(ValueError, match="need ports \\['keras_impl'\\]"):
        testing.assert_train_alike(
            "my_mlp_nokeras",
            ports=ports,
            draw=spec.draw,
            config=spec.config,
            param_names=spec.param_names,
            reference="torch.eager",
            backends=["keras.tensorflow"],
        )
