"""resnet18 in Keras 3: a functional, channels-last ResNet-18, as a Keras user porting
torchvision's model writes it; the same code on the tensorflow, torch and jax backends.

The model (``make_model``): layers named with torchvision's module names (``conv1``, ``bn1``,
``layer2.0.downsample.0``, ...), so the canonical state maps onto it by name. Where torchvision
pads a convolution, an explicit ``ZeroPadding2D`` followed by a valid ``Conv2D``: Keras's
"same" padding with stride 2 pads bottom/right only on TensorFlow (torch pads both sides).
``BatchNormalization`` with momentum 0.9 and epsilon 1e-5: torch's momentum 0.1 is the weight
of the batch, Keras's momentum the weight of the old value, and Keras's defaults (0.99, 1e-3)
are not torch's. The model has one output per ``ACTIVATION_NAMES`` layer (the logits last),
so the training step's own forward pass gives every activation.

Weights load through ``cases.resnet18.layout`` (OIHW -> HWIO kernels, fc (out, in) -> (in,
out)); BatchNorm's moving mean and variance start at the canonical state (0 and 1).

``Trainer.load_state`` puts the reference's training state at a later step into the running
model, in place (no new model, nothing retraced): the parameters through the same layout, the
BatchNorm layers' moving mean and variance under their canonical names (``running_mean``,
``running_var``) as they are, and SGD's momentum buffers, converted to channels-last like the
parameters they go with, into the optimizer's velocity slots by
``equiv.support.keras.load_optimizer`` (torch's buffer b as Keras's velocity -lr * b).

The step (``Trainer``): Keras 3 has no ``minimize``, so the gradient comes from the backend's
autodiff (``backend.value_and_grad``, ``has_aux``) of a loss computed by ``model.stateless_call``
(training mode), which returns the BatchNorm layers' new moving statistics instead of assigning
them: the trainer assigns them once, after the gradient, on every backend (Keras's own JAX train
step does the same; on jax an assignment inside the differentiated loss would be lost). Then
``SGD(lr, momentum=0.9).apply_gradients``: Keras's momentum form, v = m*v - lr*g; p += v, is
torch's (buf = m*buf + g; p -= lr*buf) with v = -lr*buf for a constant lr, up to rounding
(``tests/test_resnet18_keras.py`` checks it). Evaluation: the model with ``training=False``
after the update.

Not corrected here, since a straightforward port does not (each is asserted in the tests):
Keras's moving variance is updated with the biased batch variance (torch: the unbiased one,
n/(n-1)); on TensorFlow in float64, SGD's momentum is float32(0.9) (``ops.cast(0.9,
"float64")`` is ``tf.cast`` of a float32 constant), 2.4e-8 relative from step 1 on; on torch
and jax Keras computes float64 BatchNormalization (and Dense) in float32 (its ``result_type``
maps float64 to float32 off TensorFlow), and on torch the float64 loss comes back float32
(its batch mean's ``divide_no_nan``; the gradient is exact).

The convolution and Dense kernels are created with a zeros initializer: the canonical weights
replace them, and on jax Keras's random initializers compile per shape (35 s of a build).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from cases.resnet18 import layout
from cases.resnet18.spec import (
    ACTIVATION_NAMES,
    PARAM_NAMES,
    STAGES,
    STEM_CHANNELS,
    batchnorms,
    blocks,
    conv_layers,
    initial_state,
)
from equiv.contract.trainer import StateNotLoadable
from equiv.layouts.transposition import contiguous
from equiv.support.keras import load_optimizer
from equiv.support.records import step_record

#: Keras's name of each BatchNormalization variable -> the canonical (torchvision) suffix
BN_PARAMS = {"gamma": "weight", "beta": "bias"}
BN_STATE = {"moving_mean": "running_mean", "moving_variance": "running_var"}


def keras_name(canonical: str) -> str:
    """A layer's Keras name: torchvision's module name with ``_`` for ``.`` (``layer1_0_conv1``).

    Keras on torch keeps a layer's variables in a ``torch.nn.ParameterDict`` keyed by their
    path (``layer name/kernel``), and torch refuses a key with a dot."""
    return canonical.replace(".", "_")


def conv(x, name: str, filters: int, kernel: int, stride: int, padding: int, dtype: str):
    """torchvision's bias-free ``Conv2d(padding=p)``: zero padding on both sides, then a valid
    convolution."""
    if padding:
        x = layers.ZeroPadding2D(padding, name=keras_name(f"{name}.pad"), dtype=dtype)(x)
    return layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="valid",
        use_bias=False,
        kernel_initializer="zeros",  # replaced by the canonical weights (module docstring)
        name=keras_name(name),
        dtype=dtype,
    )(x)


def batchnorm(x, name: str, dtype: str):
    """torch's ``BatchNorm2d`` defaults in Keras's terms (momentum 1 - 0.1, eps 1e-5)."""
    return layers.BatchNormalization(
        momentum=0.9, epsilon=1e-5, name=keras_name(name), dtype=dtype
    )(x)


def basic_block(x, name: str, filters: int, stride: int, downsample: bool, dtype: str):
    """torchvision's ``BasicBlock``: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
    out = conv(x, f"{name}.conv1", filters, 3, stride, 1, dtype)
    out = batchnorm(out, f"{name}.bn1", dtype)
    out = layers.ReLU(name=keras_name(f"{name}.relu1"), dtype=dtype)(out)
    out = conv(out, f"{name}.conv2", filters, 3, 1, 1, dtype)
    out = batchnorm(out, f"{name}.bn2", dtype)
    if downsample:
        x = conv(x, f"{name}.downsample.0", filters, 1, stride, 0, dtype)
        x = batchnorm(x, f"{name}.downsample.1", dtype)
    out = layers.Add(name=keras_name(f"{name}.add"), dtype=dtype)([out, x])
    return layers.ReLU(name=keras_name(name), dtype=dtype)(out)


def make_model(cfg, dtype: str) -> keras.Model:
    """The functional ResNet-18 (NHWC input), one output per ``ACTIVATION_NAMES`` entry."""
    size, channels = cfg["size"], cfg["channels"]
    inputs = keras.Input(shape=(size, size, channels), dtype=dtype, name="x")
    x = conv(inputs, "conv1", STEM_CHANNELS, 7, 2, 3, dtype)
    x = batchnorm(x, "bn1", dtype)
    x = layers.ReLU(name="relu", dtype=dtype)(x)
    # torch pads the max-pool with -inf; zeros give the same maximum here, since its input is
    # a ReLU's output (>= 0) and every 3x3 window holds at least one input element.
    x = layers.ZeroPadding2D(1, name="maxpool_pad", dtype=dtype)(x)
    x = layers.MaxPooling2D(3, strides=2, name="maxpool", dtype=dtype)(x)
    stride_of = {stage: stride for stage, _, stride in STAGES}
    width_of = {stage: width for stage, width, _ in STAGES}
    for block, downsample in blocks():
        stage, index = block.split(".")
        stride = stride_of[stage] if index == "0" else 1
        x = basic_block(x, block, width_of[stage], stride, downsample, dtype)
    x = layers.GlobalAveragePooling2D(name="avgpool", dtype=dtype)(x)
    logits = layers.Dense(cfg["classes"], kernel_initializer="zeros", name="fc", dtype=dtype)(x)
    single = keras.Model(inputs, logits, name="resnet18")
    outputs = [single.get_layer(keras_name(name)).output for name in ACTIVATION_NAMES]
    return keras.Model(inputs, outputs, name="resnet18")


def canonical_variables(model: keras.Model) -> tuple[dict, dict]:
    """(parameters, state): canonical name -> the model's variable, in the spec's orders
    (``PARAM_NAMES``, ``STATE_NAMES``)."""
    params, state = {}, {}
    for conv_name, bn in conv_bns():
        params[f"{conv_name}.weight"] = model.get_layer(keras_name(conv_name)).kernel
        layer = model.get_layer(keras_name(bn))
        for attribute, canonical in BN_PARAMS.items():
            params[f"{bn}.{canonical}"] = getattr(layer, attribute)
    fc = model.get_layer("fc")
    params["fc.weight"], params["fc.bias"] = fc.kernel, fc.bias
    for bn, _ in batchnorms():
        layer = model.get_layer(keras_name(bn))
        for attribute, canonical in BN_STATE.items():
            state[f"{bn}.{canonical}"] = getattr(layer, attribute)
    return {n: params[n] for n in PARAM_NAMES}, state


def conv_bns() -> list[tuple[str, str]]:
    return [(layer[0], layer[6]) for layer in conv_layers()]


def load(variables: dict, canonical: dict) -> None:
    """Assigns canonical arrays (by name) to the model's variables, converted to channels-last;
    ``Variable.assign`` refuses a wrong shape."""
    for name, variable in variables.items():
        variable.assign(channels_last(name, canonical[name]))


def optimizer_to_channels_last(canonical: dict) -> dict:
    """The canonical optimizer state (``momentum/<param>`` in its parameter's canonical layout)
    in the layout of the variables it goes with; a key without a parameter (``t``) as it is."""
    return {
        key: channels_last(key.partition("/")[2], value) if "/" in key else value
        for key, value in canonical.items()
    }


def channels_last(name: str, value: np.ndarray) -> np.ndarray:
    """A canonical array channels-last and contiguous: every Keras backend copies a strided
    view (the transposed kernel) element by element (``equiv.layouts.transposition``)."""
    return contiguous(layout.param_to_channels_last(name, value))


class Trainer:
    """One training step of the functional model: loss, gradients, activations and new
    BatchNorm statistics from one ``stateless_call``; the statistics assigned once."""

    def __init__(self, state, backend):
        cfg, dtype = state.config, state.dtype
        self.backend = backend
        self.model = make_model(cfg, dtype)
        self.named, self.state = canonical_variables(self.model)
        load(self.named, state.params)
        load(self.state, initial_state(cfg))  # running mean 0, variance 1
        self.variables = list(self.named.values())
        x = layout.activation_to_channels_last(state.data["x"])
        self.x = backend.to_native(x)
        self.y = ops.cast(backend.to_native(state.data["y"]), "int32")
        self.loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)
        with backend.floatx(dtype):  # the learning rate is a variable of floatx()
            self.optimizer = keras.optimizers.SGD(cfg["lr"], momentum=cfg["momentum"])
        self.optimizer.build(self.variables)

    def load_state(self, resume) -> None:
        """The reference's training state (``TrainingState``) into the running model and
        optimizer, in place: parameters and momentum channels-last, BatchNorm's moving
        statistics by their canonical names."""
        unknown = sorted(set(resume.state) - set(self.state))
        missing = sorted(set(self.state) - set(resume.state))
        if unknown or missing:
            parts = [f"it keeps no state named {', '.join(unknown)}"] if unknown else []
            if missing:
                parts.append(f"the state lacks {', '.join(missing)}, which its BatchNorm keeps")
            raise StateNotLoadable(f"resnet18's Keras model: {'; '.join(parts)}")
        load(self.named, resume.params)
        load(self.state, resume.state)
        load_optimizer(
            self.optimizer, self.named, optimizer_to_channels_last(resume.optimizer), resume.step
        )

    def compute_loss(self):
        """The training-mode forward without side effects: (loss, (outputs, new state))."""
        model = self.model
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        outputs, non_trainable = model.stateless_call(
            trainable, non_trainable, self.x, training=True
        )
        return self.loss_fn(self.y, outputs[-1]), (outputs, non_trainable)

    def run_step(self) -> None:
        self.last = self.evaluation = None  # not held through this step (45 MB in float32)
        (loss, (outputs, non_trainable)), grads = self.backend.value_and_grad(
            self.compute_loss, self.variables, has_aux=True
        )
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        for variable, value in zip(self.model.non_trainable_variables, non_trainable, strict=True):
            variable.assign(value)  # BatchNorm's moving statistics: once per step
        self.evaluation = self.model(self.x, training=False)[-1]
        self.last = (loss, grads, outputs)

    def record(self):
        loss, grads, outputs = self.last
        to_numpy = self.backend.to_numpy

        def canonical(name, value):
            return layout.param_to_canonical(name, to_numpy(value))

        return step_record(
            to_numpy,
            loss,
            {n: canonical(n, g) for n, g in zip(self.named, grads, strict=True)},
            {n: canonical(n, v) for n, v in self.named.items()},
            activations={
                n: layout.activation_to_canonical(to_numpy(a))
                for n, a in zip(ACTIVATION_NAMES, outputs, strict=True)
            },
            state={n: to_numpy(v) for n, v in self.state.items()},
            evaluation={"logits": self.evaluation},
        )


def build(state, backend):
    return Trainer(state, backend)
