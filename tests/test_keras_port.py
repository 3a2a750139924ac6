"""``equiv.support.keras_port``: a Keras 3 port from its model, layout, loss and optimizer.

keras.tensorflow runs in this process: the case ports built with it load a state bit for bit,
take the reference's step, and load Adam's slots; planted wrong layouts fail on one line; a
tied LSTM bias is recorded as its observable with both parts' gradients; the recorded
activations name the first layer a planted forward bug changes. keras.jax (Keras's backend is
fixed per process) runs the custom-model checks in a process of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from equiv import layouts
from equiv.backends.implementations import load_implementation
from equiv.backends.registry import get_backend
from equiv.contract.case import get_case
from equiv.contract.records import CaseState, TrainingState
from equiv.contract.trainer import StateNotLoadable
from equiv.reference.trainer import ReferenceTrainer

ROOT = Path(__file__).resolve().parent.parent
TRANSFORMER = "equiv_transformer.transformer_block.keras_impl"
BACKEND = os.environ.get("EQUIV_KERAS_PORT_BACKEND", "keras.tensorflow")
_reason = get_backend(BACKEND).availability()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")


def backend():
    b = get_backend(BACKEND)
    b.configure(1)
    return b


def case_port(case: str, dtype: str = "float64"):
    try:
        spec = get_case(case)
    except Exception as exc:  # the example plugin's case, not installed
        pytest.skip(f"{case}: {exc}")
    b = backend()
    state = spec.make_state(0, dtype)
    return spec, state, b.build_trainer(spec, state, load_implementation(b, spec))


def relative_error(ours, theirs) -> float:
    theirs = np.asarray(theirs)
    scale = max(float(np.max(np.abs(theirs))), 1e-300)
    return float(np.max(np.abs(np.asarray(ours) - theirs))) / scale


# -- the case ports --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["keras_sequential_adam", "transformer_block"])
def test_a_loaded_state_is_recorded_bit_for_bit(case, dtype):
    """Parameters and Adam's slots of a reference three steps in, loaded: the parameters
    read back are the state's, bit for bit (reshaped attention kernels included)."""
    spec, state, port = case_port(case, dtype)
    reference = ReferenceTrainer(spec, state)
    for _ in range(3):
        reference.run_step()
    resume = reference.training_state().astype(dtype)
    port.load_state(resume)
    params, held = port.parameters()
    assert held == {}
    assert sorted(params) == sorted(spec.param_names)
    for name, value in resume.params.items():
        assert params[name].dtype == np.dtype(dtype)
        assert np.array_equal(params[name], value), name


def test_keras_sequentials_step_is_the_references_in_float64():
    spec, state, port = case_port("keras_sequential")
    reference = ReferenceTrainer(spec, state)
    port.run_step()
    reference.run_step()
    ours, theirs = port.record(), reference.record()
    assert abs(ours.loss - theirs.loss) <= 1e-13 * theirs.loss
    for group in ("grads", "params"):
        for name, value in getattr(theirs, group).items():
            assert relative_error(getattr(ours, group)[name], value) < 1e-12, (group, name)
    assert list(ours.activations) == ["hidden", "out"]  # each Dense layer's output
    assert port.layout.layers.keys() == ours.activations.keys()


def adam_cell(case: str):
    """The float64 port and the reference variant its declared explanation proves (Keras's
    epsilon-hat Adam)."""
    from test_load_state_keras import keras_cell

    return keras_cell(case, BACKEND)


def test_adams_slots_load_and_the_next_step_is_the_references():
    from test_teacher_forcing import next_step_after_loading

    spec, reference, port = adam_cell("keras_sequential_adam")
    next_step_after_loading(port, reference, 4, 1e-10)


def test_adams_moments_loaded_transposed_are_caught(monkeypatch):
    """Planted: the moments of the square attention kernels transposed on their way in (the
    parameters right): the next step is off."""
    from test_teacher_forcing import next_step_after_loading

    from equiv.support import keras_port

    real = keras_port.framework_slots

    def transposed(layout, optimizer):
        turned = {k: v.T if k[2:] in ("wq", "wk", "wv") else v for k, v in optimizer.items()}
        return real(layout, turned)

    spec, reference, port = adam_cell("transformer_block")
    monkeypatch.setattr(keras_port, "framework_slots", transposed)
    with pytest.raises(AssertionError):
        next_step_after_loading(port, reference, 3, 1e-9)


def test_projections_declared_torch_style_are_caught(monkeypatch):
    """Planted: the transformer's q, k, v kernels transposed before Keras's reshape (torch's
    (out, in)), in its layout: the same shapes, and the next step after a load is off."""
    from test_teacher_forcing import next_step_after_loading

    module = pytest.importorskip(TRANSFORMER)
    real = module.keras_layout

    def torch_style(cfg):
        layout = real(cfg)
        rules = [
            layouts.copy(
                r.sources[0],
                r.targets[0],
                lambda a, r=r: r.forward(a.T)[0],
                lambda t, r=r: r.inverse(t)[0].T,
            )
            if r.sources[0] in ("wq", "wk", "wv")
            else r
            for r in layout.rules
        ]
        return replace(layout, rules=tuple(rules))

    monkeypatch.setattr(module, "keras_layout", torch_style)
    spec, reference, port = adam_cell("transformer_block")
    with pytest.raises(AssertionError):
        next_step_after_loading(port, reference, 3, 1e-9)


# -- planted wrong layouts: one line each -------------------------------------------------------


def sequential(use_bias: bool = True):
    import keras

    from cases.keras_sequential.keras_impl import sequential

    if use_bias:
        return sequential({"D_in": 6, "H": 4, "D_out": 3}, "float64")
    return keras.Sequential(
        [keras.Input(shape=(6,)), keras.layers.Dense(4, name="hidden", use_bias=False)]
    )


def one_line_error(model, layout) -> str:
    from equiv.support.keras_port import bind

    with pytest.raises(layouts.LayoutError) as caught:
        bind(model, layout)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_torch_shaped_kernel_of_a_non_square_layer_fails_on_its_shape():
    """The hidden layer declared as torch holds it, (out, in), not transposed to Keras's."""
    wrong = {"hidden": layouts.torch_linear(6, 4), "out": layouts.keras_dense(4, 3)}
    message = one_line_error(sequential(), layouts.compose("m", wrong, framework_sep="/"))
    assert "'hidden/weight' is (4, 6)" in message
    assert "'hidden/kernel' is (6, 4)" in message


def test_a_model_variable_the_layout_does_not_map_fails():
    short = {"hidden": layouts.keras_dense(6, 4), "out": layouts.keras_dense(4, 3, bias=False)}
    message = one_line_error(sequential(), layouts.compose("m", short, framework_sep="/"))
    assert "'out/bias' (3,) is not in the layout" in message


def test_a_layout_tensor_the_model_lacks_fails():
    layout = layouts.compose("m", {"hidden": layouts.keras_dense(6, 4)}, framework_sep="/")
    message = one_line_error(sequential(use_bias=False), layout)
    assert "layout tensor 'hidden/bias' (4,) is not in the model" in message


def test_a_layout_composed_with_torchs_separator_says_so():
    dense = {"hidden": layouts.keras_dense(6, 4), "out": layouts.keras_dense(4, 3)}
    message = one_line_error(sequential(), layouts.compose("m", dense))
    assert "framework_sep='/'" in message


def test_tensors_of_one_shape_in_the_wrong_order_fail_on_their_names():
    import keras

    x = keras.Input(shape=(5,))
    model = keras.Model(x, keras.layers.LayerNormalization(name="ln")(x))
    swapped = layouts.Layout(
        "swapped",
        {"gamma": (5,), "beta": (5,)},
        {"beta": (5,), "gamma": (5,)},
        (layouts.copy("gamma", "gamma"), layouts.copy("beta", "beta")),
    )
    message = one_line_error(model, layouts.compose("m", {"ln": swapped}, framework_sep="/"))
    assert "'ln/beta' falls on the model's variable 'ln/gamma'" in message


# -- a tied parameter: Keras's LSTM bias is torch's bias_ih + bias_hh ---------------------------

F, H, T, N = 3, 4, 5, 2
LR = 0.125


def lstm_port(optimizer="sgd"):
    import keras

    from equiv.support.keras_port import port

    rng = np.random.default_rng(1)
    layout = layouts.compose(
        "lstm_head",
        {"lstm": layouts.keras_lstm(F, H), "head": layouts.keras_dense(H, 1)},
        framework_sep="/",
    )
    params = {n: 0.5 * rng.standard_normal(s) for n, s in layout.canonical.items()}
    data = {"x": rng.standard_normal((N, T, F)), "y": rng.standard_normal((N, 1))}
    x = keras.Input(shape=(T, F), dtype="float64")
    h = keras.layers.LSTM(H, dtype="float64", name="lstm")(x)
    model = keras.Model(x, keras.layers.Dense(1, dtype="float64", name="head")(h))
    make = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[optimizer]
    state = CaseState(data, params, {}, "float64")
    trainer = port(
        state,
        backend(),
        model,
        layout=layout,
        loss=keras.losses.MeanSquaredError(dtype="float64"),
        optimizer=lambda: make(learning_rate=LR),
    )
    return trainer, params


def test_a_tied_bias_is_recorded_as_its_sum_with_a_gradient_for_each_part():
    trainer, before = lstm_port()
    trainer.run_step()
    record = trainer.record()
    tied = "lstm.bias_ih+bias_hh"
    assert tied in record.params
    assert "lstm.bias_ih" not in record.params and "lstm.bias_hh" not in record.params
    g_ih, g_hh = record.grads["lstm.bias_ih"], record.grads["lstm.bias_hh"]
    assert np.array_equal(g_ih, g_hh) and np.any(g_ih != 0)
    # SGD moves Keras's one bias by lr * g: the sum of the parts by lr * g, not 2 lr * g
    summed = before["lstm.bias_ih"] + before["lstm.bias_hh"]
    assert relative_error(record.params[tied], summed - LR * g_ih) < 1e-14
    moved = before["lstm.kernel_ih"] - LR * record.grads["lstm.kernel_ih"]
    assert relative_error(record.params["lstm.kernel_ih"], moved) < 1e-14
    assert set(record.activations) == {"lstm", "head"}


def test_a_tied_bias_loads_its_parts_equal_moments_and_refuses_different_ones():
    trainer, params = lstm_port("adam")
    rng = np.random.default_rng(2)
    moments = {
        f"{kind}/{n}": np.abs(rng.standard_normal(np.shape(v)))
        for kind in ("m", "v")
        for n, v in params.items()
    }
    for kind in ("m", "v"):
        moments[f"{kind}/lstm.bias_hh"] = moments[f"{kind}/lstm.bias_ih"]
    trainer.load_state(TrainingState(3, params, {**moments, "t": np.array(3.0)}, {}))
    loaded, _ = trainer.parameters()
    assert np.array_equal(
        loaded["lstm.bias_ih+bias_hh"], params["lstm.bias_ih"] + params["lstm.bias_hh"]
    )
    bias = trainer.framework["lstm/lstm_cell/bias"]
    slot = trainer.optimizer._momentums[trainer.optimizer._get_variable_index(bias)]
    assert np.array_equal(trainer.backend.to_numpy(slot), moments["m/lstm.bias_ih"])
    assert int(trainer.backend.to_numpy(trainer.optimizer.iterations)) == 3

    moments["m/lstm.bias_hh"] = moments["m/lstm.bias_hh"] + 1.0
    with pytest.raises(StateNotLoadable, match="different values"):
        trainer.load_state(TrainingState(3, params, moments, {}))


# -- activations: the first layer a forward bug changes -----------------------------------------


def activation_run(activation: str):
    """Dense ``l1``, a parameterless ``Activation`` layer ``act`` (recorded through
    ``activations``), Dense ``l2``; the canonical forward is relu's."""
    import keras

    from equiv.support.keras_port import port

    rng = np.random.default_rng(3)
    layout = layouts.compose(
        "mlp", {"l1": layouts.keras_dense(4, 5), "l2": layouts.keras_dense(5, 3)}, framework_sep="/"
    )
    params = {n: rng.standard_normal(s) for n, s in layout.canonical.items()}
    data = {"x": rng.standard_normal((6, 4)), "y": rng.standard_normal((6, 3))}
    model = keras.Sequential(
        [
            keras.Input(shape=(4,), dtype="float64"),
            keras.layers.Dense(5, dtype="float64", name="l1"),
            keras.layers.Activation(activation, dtype="float64", name="act"),
            keras.layers.Dense(3, dtype="float64", name="l2"),
        ]
    )
    trainer = port(
        CaseState(data, params, {}, "float64"),
        backend(),
        model,
        layout=layout,
        loss=keras.losses.MeanSquaredError(dtype="float64"),
        optimizer=lambda: keras.optimizers.SGD(learning_rate=0.1),
        activations={"act": "act"},
    )
    trainer.run_step()
    h1 = data["x"] @ params["l1.kernel"] + params["l1.bias"]
    h2 = np.maximum(h1, 0)
    reference = {"l1": h1, "act": h2, "l2": h2 @ params["l2.kernel"] + params["l2.bias"]}
    return trainer.record().activations, reference


def first_wrong(activations, reference):
    assert list(activations) == list(reference)  # forward order
    return next(
        (n for n, a in activations.items() if relative_error(a, reference[n]) > 1e-12), None
    )


def test_the_activations_name_the_first_layer_a_forward_bug_changes():
    assert first_wrong(*activation_run("relu")) is None
    assert first_wrong(*activation_run("sigmoid")) == "act"  # planted: l1 agrees, act not


# -- keras.jax, in a process of its own ---------------------------------------------------------

IN_JAX = [
    "test_a_tied_bias_is_recorded_as_its_sum_with_a_gradient_for_each_part",
    "test_a_tied_bias_loads_its_parts_equal_moments_and_refuses_different_ones",
    "test_the_activations_name_the_first_layer_a_forward_bug_changes",
]


@pytest.mark.slow  # a subprocess of Keras on jax (pyproject.toml's slow extras)
@pytest.mark.skipif(BACKEND != "keras.tensorflow", reason="runs from the in-process suite")
def test_the_custom_model_checks_pass_on_keras_jax():
    if reason := get_backend("keras.jax").availability():
        pytest.skip(reason)
    env = {**os.environ, **get_backend("keras.jax").worker_env}
    env["EQUIV_KERAS_PORT_BACKEND"] = "keras.jax"
    code = "import test_keras_port as t\n" + "".join(f"t.{name}()\n" for name in IN_JAX)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent,
        env={**env, "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
