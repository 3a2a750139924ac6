"""resnet18's Keras 3 trainer (``cases/resnet18/keras_impl.py``) on its three backends.

The model must map onto torchvision's names and layouts, load the canonical state bit for bit,
and the trainer must report every quantity of the step from the right moment: activations of
the training forward (the step's own ``stateless_call``), BatchNorm moving statistics updated
exactly once per step, evaluation logits after the update. The checks tie the reported
quantities to each other (a BatchNorm's moving statistics to the batch statistics of the
convolution it reads, ``fc`` to the loss, the evaluation logits to a fresh model loaded with
the reported parameters and state); each planted bug below shows one of them failing.

keras.tensorflow runs in this process (float64: 1e-9-relative margins); keras.torch and
keras.jax need a process each (Keras's backend is fixed at import), where one step is checked
by the same numpy checks. Keras's own differences from torch are asserted as what they are:
the moving variance from the *biased* batch variance, and on TensorFlow SGD's momentum cast
through float32 in float64 (``ops.cast(0.9, "float64")`` is ``tf.cast`` of a float32 constant).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cases.resnet18 import layout
from cases.resnet18.spec import (
    ACTIVATION_NAMES,
    PARAM_NAMES,
    SPEC,
    STATE_NAMES,
    blocks,
    conv_layers,
    initial_state,
)
from equiv.backends.registry import get_backend

ROOT = Path(__file__).resolve().parent.parent
SEED = 3
#: float64 margins for relations that hold exactly in real arithmetic
RTOL, ATOL = 1e-9, 1e-12

_reason = get_backend("keras.tensorflow").availability()
needs_keras_tf = pytest.mark.skipif(_reason is not None, reason=_reason or "")


def backend():
    b = get_backend("keras.tensorflow")
    b.configure(1)
    return b


def build(dtype: str = "float64", trainer_class=None):
    from cases.resnet18 import keras_impl

    state = SPEC.make_state(SEED, dtype)
    return (trainer_class or keras_impl.Trainer)(state, backend()), state


def one_step(**kwargs):
    trainer, state = build(**kwargs)
    trainer.run_step()
    return trainer, state, trainer.record()


@pytest.fixture(scope="module")
def stepped():
    """A float64 step's state and record, without its trainer: a Keras model kept for the
    module would stay in TensorFlow's CPU allocator pool beside every model the module's
    other tests build, and that pool is never handed back (docs/performance.md)."""
    _, state, record = one_step()
    return state, record


# --- the checks: numpy on a record, so that a record from any backend can be checked -------


def check_names_shapes_dtype(record, state, dtype: str, loss_dtype: str | None = None) -> None:
    """``loss_dtype``: the loss's, where it is not the cell's (keras.torch float64)."""
    assert tuple(record.grads) == tuple(record.params) == PARAM_NAMES
    assert tuple(record.activations) == ACTIVATION_NAMES  # in execution order
    assert tuple(record.state) == STATE_NAMES
    assert tuple(record.evaluation) == ("logits",)
    n = state.config["N"]
    shapes = {
        "conv1": (n, 64, 16, 16),
        "maxpool": (n, 64, 8, 8),
        "layer2.0.downsample.1": (n, 128, 4, 4),
        "layer4.1": (n, 512, 1, 1),
        "avgpool": (n, 512),
        "fc": (n, 10),
    }
    for name, shape in shapes.items():
        assert record.activations[name].shape == shape, name
    assert record.evaluation["logits"].shape == (n, 10)
    for name, value in state.params.items():
        assert record.params[name].shape == record.grads[name].shape == value.shape, name
    for name, value in initial_state(state.config).items():
        assert record.state[name].shape == value.shape, name
    values = [*record.grads.values(), *record.params.values(), *record.activations.values()]
    values += [*record.state.values(), *record.evaluation.values()]
    assert {v.dtype for v in values} == {np.dtype(dtype)}
    assert np.asarray(record.loss).dtype == np.dtype(loss_dtype or dtype)
    assert abs(float(record.loss) - np.log(10)) < 1.0  # ten classes, drawn weights
    changed = [n for n in PARAM_NAMES if not np.array_equal(record.params[n], state.params[n])]
    assert changed == list(PARAM_NAMES)


def check_convolutions(record, state, rtol=1e-9, atol=1e-12) -> None:
    """Every convolution's activation is the numpy convolution (torch's symmetric padding,
    ``equiv.reference.layers.conv2d``) of its recorded input with its canonical kernel: the data for
    ``conv1``, the block's input for ``conv1`` and ``downsample.0``, ``relu(bn1)`` for
    ``conv2``. A kernel loaded transposed or a stride-2 "same" padding (bottom/right) is not."""
    from equiv.reference.layers import conv2d

    names = [block for block, _ in blocks()]
    block_input = dict(zip(names, ["maxpool", *names[:-1]], strict=True))
    for conv, _, _, _, stride, padding, _ in conv_layers():
        block = ".".join(conv.split(".")[:2])
        if conv == "conv1":
            x = state.data["x"]
        elif conv.endswith(".conv2"):
            x = np.maximum(record.activations[f"{block}.bn1"], 0)
        else:
            x = record.activations[block_input[block]]
        want, _ = conv2d(x, state.params[f"{conv}.weight"], stride, padding)
        np.testing.assert_allclose(record.activations[conv], want, rtol, atol, err_msg=conv)


def check_batchnorm_state(record, state, rtol=RTOL, atol=ATOL) -> None:
    """Each BatchNorm's moving statistics after step 0 are one update of the initial ones (0
    and 1) with the batch statistics of the convolution output it normalised (recorded as that
    convolution's activation): 0.9*0 + 0.1*mean and 0.9*1 + 0.1*var, Keras's *biased*
    variance. A second update in the step gives 0.19*mean; torch's unbiased variance differs
    by n/(n-1)."""
    init = initial_state(state.config)
    for conv, _, _, _, _, _, bn in conv_layers():
        x = record.activations[conv]
        mean = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))  # biased: Keras's moving variance
        want_mean = 0.9 * init[f"{bn}.running_mean"] + 0.1 * mean
        want_var = 0.9 * init[f"{bn}.running_var"] + 0.1 * var
        np.testing.assert_allclose(record.state[f"{bn}.running_mean"], want_mean, rtol, atol)
        np.testing.assert_allclose(record.state[f"{bn}.running_var"], want_var, rtol, atol)


def check_batchnorm_outputs(record, rtol=1e-8, atol=1e-10) -> None:
    """At step 0 (gamma 1, beta 0) each BatchNorm activation is its convolution's output
    normalised with the biased batch statistics and eps 1e-5 (Keras's default 1e-3 is not)."""
    for conv, _, _, _, _, _, bn in conv_layers():
        x = record.activations[conv]
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        var = x.var(axis=(0, 2, 3), keepdims=True)
        want = (x - mean) / np.sqrt(var + SPEC.config["bn_eps"])
        np.testing.assert_allclose(record.activations[bn], want, rtol, atol, err_msg=bn)


def check_fc_is_the_trained_logits(record, state, rtol=1e-12) -> None:
    """``fc``'s activation is ``avgpool`` through the pre-update fc layer, and the recorded
    loss is its cross-entropy: the activations are the training forward's."""
    w, b = state.params["fc.weight"], state.params["fc.bias"]
    logits = record.activations["fc"]
    np.testing.assert_allclose(logits, record.activations["avgpool"] @ w.T + b, rtol, 1e-12)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    y = state.data["y"].astype(int)
    loss = -logp[np.arange(len(y)), y].mean()
    assert loss == pytest.approx(float(record.loss), rel=rtol)


def check_evaluation(record, state) -> None:
    """The evaluation logits are an evaluation-mode forward of the reported (updated)
    parameters and state: a fresh model loaded with them (canonical -> channels-last) gives
    them bit for bit."""
    from cases.resnet18 import keras_impl

    model = keras_impl.make_model(state.config, state.dtype)
    params, moving = keras_impl.canonical_variables(model)
    keras_impl.load(params, record.params)
    keras_impl.load(moving, record.state)
    x = layout.activation_to_channels_last(state.data["x"])
    want = backend().to_numpy(model(x, training=False)[-1])
    np.testing.assert_array_equal(record.evaluation["logits"], want)


# --- the model ------------------------------------------------------------------------------


@needs_keras_tf
def test_layer_names_and_weight_shapes_map_to_the_canonical_ones():
    """Every canonical name is one variable of the layer of torchvision's name (``.`` -> ``_``),
    of the canonical shape in channels-last; every variable of the model is one of them."""
    import keras

    from cases.resnet18 import keras_impl

    model = keras_impl.make_model(SPEC.config, "float64")
    params, moving = keras_impl.canonical_variables(model)
    assert tuple(params) == PARAM_NAMES and tuple(moving) == STATE_NAMES
    state = SPEC.make_state(SEED, "float64")
    for name, variable in params.items():
        layer = keras_impl.keras_name(name.rsplit(".", 1)[0])
        assert variable.path.split("/")[0] == layer, name
        want = layout.param_to_channels_last(name, state.params[name]).shape
        assert tuple(variable.shape) == want, name
        assert variable.trainable
    for name, variable in moving.items():
        assert variable.path.split("/")[0] == keras_impl.keras_name(name.rsplit(".", 1)[0])
        assert not variable.trainable
    ids = lambda vs: sorted(id(v) for v in vs)  # noqa: E731
    assert ids(params.values()) == ids(model.trainable_variables)
    assert ids(moving.values()) == ids(model.non_trainable_variables)
    layers = {type(layer).__name__ for layer in model.layers}
    assert "Conv2D" in layers and "BatchNormalization" in layers
    for layer in model.layers[1:]:  # after the InputLayer (float64 input, float32 policy)
        assert layer.dtype_policy.name == "float64", layer.name  # every layer gets the dtype
        if isinstance(layer, keras.layers.Conv2D):
            assert layer.padding == "valid" and not layer.use_bias, layer.name
        if isinstance(layer, keras.layers.BatchNormalization):
            assert (layer.momentum, layer.epsilon) == (0.9, 1e-5), layer.name


@needs_keras_tf
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_canonical_state_loads_and_reads_back_bit_exactly(dtype):
    trainer, state = build(dtype)
    to_numpy = trainer.backend.to_numpy
    want = {**state.params, **initial_state(state.config)}
    read = {n: layout.param_to_canonical(n, to_numpy(v)) for n, v in trainer.named.items()}
    read |= {n: to_numpy(v) for n, v in trainer.state.items()}
    assert set(read) == set(want)
    for name, value in want.items():
        assert read[name].dtype == np.dtype(dtype), name
        assert read[name].tobytes() == value.astype(dtype).tobytes(), name


def test_the_converters_round_trip():
    """Every canonical parameter and a 4-d and a 2-d activation to channels-last and back,
    bit for bit; the kernels really move (a transpose that is the identity would pass)."""
    state = SPEC.make_state(SEED, "float64")
    for name, value in state.params.items():
        there = layout.param_to_channels_last(name, value)
        assert layout.param_to_canonical(name, there).tobytes() == value.tobytes(), name
        if value.ndim == 4:
            assert there.shape == (*value.shape[2:], value.shape[1], value.shape[0])
    x = state.data["x"]
    nhwc = layout.activation_to_channels_last(x)
    assert nhwc.shape == (4, 32, 32, 3) and nhwc[1, 2, 3, 0] == x[1, 0, 2, 3]
    assert layout.activation_to_canonical(nhwc).tobytes() == x.tobytes()
    flat = x.reshape(4, -1)
    assert layout.activation_to_canonical(flat) is flat


# --- one step -------------------------------------------------------------------------------


@needs_keras_tf
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_step_reports_every_name_in_canonical_shapes_and_dtype(dtype, stepped):
    state, record = stepped if dtype == "float64" else one_step(dtype=dtype)[1:]
    check_names_shapes_dtype(record, state, dtype)


@needs_keras_tf
def test_the_records_hold_together(stepped):
    state, record = stepped
    check_convolutions(record, state)
    check_batchnorm_outputs(record)
    check_batchnorm_state(record, state)
    check_fc_is_the_trained_logits(record, state)
    check_evaluation(record, state)


@needs_keras_tf
def test_the_update_is_keras_sgd_with_momentum():
    """Step 2's parameters from steps 1 and 2's gradients by torch's rule (buf = g1, then
    buf = m buf + g2, p -= 0.01 buf), which Keras's v = m v - lr g; p += v is for a constant
    lr, with m = float32(0.9) on TensorFlow in float64: Keras's SGD casts its Python float
    momentum with ``ops.cast``, and ``tf.cast(0.9, float64)`` goes through float32. Exact 0.9
    misses by ~lr * |g| * 2.4e-8 (3.4e-9 on conv1.weight here; keras.torch and keras.jax
    cast exactly)."""
    trainer, state = build()
    trainer.run_step()
    first = trainer.record()
    trainer.run_step()
    second = trainer.record()
    lr = state.config["lr"]
    keras_momentum = float(np.float32(state.config["momentum"]))
    for name in ("conv1.weight", "layer3.0.downsample.1.bias", "fc.weight"):
        for momentum, rtol in ((keras_momentum, RTOL), (state.config["momentum"], None)):
            buf = momentum * first.grads[name] + second.grads[name]
            want = first.params[name] - lr * buf
            if rtol is None:  # torch's exact 0.9: off by far more than rounding
                assert np.abs(second.params[name] - want).max() > 1e3 * ATOL * lr, name
            else:
                np.testing.assert_allclose(second.params[name], want, rtol, 1e-15, err_msg=name)


# --- planted bugs: each check fails on the bug it is there for --------------------------------


def _planted(name):
    from cases.resnet18 import keras_impl

    class Planted(keras_impl.Trainer):
        plant = name

        def run_step(self):
            if self.plant == "eval activations":  # activations of an evaluation-mode forward
                super().run_step()
                loss, grads, _ = self.last
                self.last = (loss, grads, self.model(self.x, training=False))
                return
            if self.plant == "evaluation before the update":
                evaluation = self.model(self.x, training=False)[-1]
                super().run_step()
                self.evaluation = evaluation
                return
            super().run_step()
            if self.plant == "double update":  # a second training-mode call after the step
                self.model(self.x, training=True)

    return Planted


@needs_keras_tf
@pytest.mark.parametrize(
    "plant, check",
    [
        ("double update", "state"),
        ("eval activations", "fc"),
        ("evaluation before the update", "evaluation"),
    ],
)
def test_a_planted_bug_fails_its_check(plant, check):
    trainer, state = build(trainer_class=_planted(plant))
    trainer.run_step()
    record = trainer.record()
    run = {
        "state": lambda: check_batchnorm_state(record, state),
        "fc": lambda: check_fc_is_the_trained_logits(record, state),
        "evaluation": lambda: check_evaluation(record, state),
    }[check]
    with pytest.raises(AssertionError):
        run()


#: planted source changes, as the selftest's mutants patch the file: (old, new) pairs
PLANTS = {
    "torch's BatchNorm momentum (0.1) as Keras's": (
        [("momentum=0.9, epsilon=1e-5", "momentum=0.1, epsilon=1e-5")],
        "state",
    ),
    "Keras's default BatchNorm eps (1e-3)": (
        [("momentum=0.9, epsilon=1e-5", "momentum=0.9, epsilon=1e-3")],
        "outputs",
    ),
    # Keras's "same" padding with stride 2 instead of the ZeroPadding2D: TF pads the 7x7 stem
    # 2 top/left and 3 bottom/right, torch 3 all round
    "padding='same' with stride 2": (
        [
            ("    if padding:\n", "    if padding and stride == 1:\n"),
            ('padding="valid"', 'padding="valid" if stride == 1 or not padding else "same"'),
        ],
        "convolutions",
    ),
    # OIHW -> WHIO (all axes reversed, ``.T``) for HWIO: a valid shape for square kernels,
    # another convolution (each kernel mirrored about its diagonal)
    "kernel transposed the wrong way": (
        [
            (
                "variable.assign(channels_last(name, canonical[name]))",
                "variable.assign(canonical[name].T if canonical[name].ndim == 4 "
                "else channels_last(name, canonical[name]))",
            )
        ],
        "convolutions",
    ),
}


@needs_keras_tf
@pytest.mark.parametrize("plant", list(PLANTS))
def test_a_planted_port_bug_fails_its_check(plant):
    """What a port gets wrong, planted in the source as the selftest's mutants plant it; the
    check it is there for fails (the record's shapes stay the canonical ones)."""
    from equiv.backends.implementations import ImplSource, Patch

    changes, check = PLANTS[plant]
    patches = tuple(Patch(old, new) for old, new in changes)
    module = ImplSource("cases.resnet18.keras_impl", patches).load()
    trainer, state = build(trainer_class=module.Trainer)
    trainer.run_step()
    record = trainer.record()
    check_names_shapes_dtype(record, state, "float64")
    run = {
        "state": lambda: check_batchnorm_state(record, state),
        "outputs": lambda: check_batchnorm_outputs(record),
        "convolutions": lambda: check_convolutions(record, state),
    }[check]
    with pytest.raises(AssertionError):
        run()


# --- keras.torch and keras.jax: one step each, in a process of its own -----------------------

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from equiv.backends.registry import get_backend
    backend = get_backend(sys.argv[1])
    backend.configure(1)
    from cases.resnet18 import keras_impl
    from cases.resnet18.spec import SPEC
    out = {}
    for dtype in ("float64", "float32"):
        trainer = keras_impl.build(SPEC.make_state(int(sys.argv[2]), dtype), backend)
        trainer.run_step()
        record = trainer.record()
        arrays = {"loss": np.asarray(record.loss)}
        for kind in ("grads", "params", "activations", "state", "evaluation"):
            arrays |= {f"{kind}/{k}": v for k, v in getattr(record, kind).items()}
        np.savez(f"{sys.argv[3]}/{dtype}.npz", **arrays)
    """
)


def _record(path: Path):
    from equiv.contract.records import StepRecord

    data = np.load(path)
    parts = {k: {} for k in ("grads", "params", "activations", "state", "evaluation")}
    for key in data.files:
        if "/" in key:
            kind, name = key.split("/", 1)
            parts[kind][name] = data[key]
    return StepRecord(loss=data["loss"][()], branch=None, **parts)


@pytest.mark.parametrize(
    "backend_id",
    ["keras.torch", pytest.param("keras.jax", marks=pytest.mark.slow)],
)
def test_one_step_on_another_keras_backend(backend_id, tmp_path):
    """Names, shapes and dtypes of one step, and the moving statistics updated exactly once
    (on jax, where an assignment inside the differentiated loss would be lost, they come back
    from ``stateless_call``). Keras computes float64 BatchNormalization in float32 off
    TensorFlow (its result_type demotes float64), so the relations hold to float32 margins
    there; on torch the float64 loss comes back float32 (the batch mean's ``divide_no_nan``
    demotes: the value is rounded, its gradient, 1/N, is exact). keras.jax is slow: eager jax
    compiles each primitive of the first step (minutes on a busy machine)."""
    reason = get_backend(backend_id).availability()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, **get_backend(backend_id).worker_env, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-c", SCRIPT, backend_id, str(SEED), str(tmp_path)],
        check=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    for dtype in ("float64", "float32"):
        state = SPEC.make_state(SEED, dtype)
        record = _record(tmp_path / f"{dtype}.npz")
        # Keras on torch: the loss's batch mean (``divide_no_nan``) returns float32
        torch64 = backend_id == "keras.torch" and dtype == "float64"
        check_names_shapes_dtype(record, state, dtype, "float32" if torch64 else None)
        check_convolutions(record, state, rtol=1e-4, atol=1e-5)
        check_batchnorm_state(record, state, rtol=1e-5, atol=1e-6)
        check_batchnorm_outputs(record, rtol=1e-4, atol=1e-4)
        if dtype == "float64":  # ... and not to float64 ones: BatchNorm computed in float32
            with pytest.raises(AssertionError):
                check_batchnorm_outputs(record, rtol=1e-9, atol=1e-9)
        check_fc_is_the_trained_logits(record, state, rtol=1e-5)
