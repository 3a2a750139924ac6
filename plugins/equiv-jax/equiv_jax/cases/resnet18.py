"""resnet18 in JAX: torchvision's ResNet-18 as pure functions over a dict of parameters.

No layer library: ``lax.conv_general_dilated`` with explicit symmetric padding ((p, p), (p, p))
(``"SAME"`` with stride 2 pads (2, 3) for the stem's 7x7 on 32 pixels, and (0, 1) for a 3x3 on
an even size: another convolution of the same output shape), BatchNorm in training mode
written out, a max-pool by ``lax.reduce_window`` over a -inf pad, a global mean, a Dense layer,
softmax cross-entropy with ``jax.nn.log_softmax``, ``jax.value_and_grad`` with ``has_aux``, and
SGD with momentum in torch's form (``equiv_jax.optim.SGD``: its state, the momentum buffers,
is ``self.buffers``).

**Layout: NCHW activations and OIHW kernels** (``dimension_numbers=("NCHW", "OIHW", "NCHW")``):
the canonical layout itself, so parameters, gradients and activations cross the boundary as
they are and no transpose can be wrong; XLA chooses its own physical layout for the
convolution either way. ``fc.weight`` stays (out, in): the Dense layer is ``h @ w.T + b``.

BatchNorm (torch's ``BatchNorm2d`` in ``train()``): normalise with the batch mean and the
*biased* batch variance over (N, H, W), eps from the config; the running statistics move by
the config's momentum (new = (1 - m) * old + m * batch) with the *unbiased* batch variance
(n / (n - 1), n = N * H * W), as torch does. They leave ``value_and_grad`` as auxiliary
output, with every ``ACTIVATION_NAMES`` activation. The evaluation logits (after the update,
normalised with the new running statistics) are computed in the same step function, so a
jitted step is one trace.

``load_state`` (``equiv_jax.trainer``) replaces the parameters, the momentum buffers and the
running statistics (``self.stats``) with the reference's, arrays of the same types: the
jitted step is not traced again.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from cases.resnet18.spec import (
    ACTIVATION_NAMES,
    PARAM_NAMES,
    STATE_NAMES,
    blocks,
    conv_layers,
    initial_state,
)
from equiv.support.records import step_record
from jax import lax

from equiv_jax import trainer as base
from equiv_jax.optim import SGD

Arrays = dict[str, jax.Array]
DIMENSION_NUMBERS = ("NCHW", "OIHW", "NCHW")
#: (conv, stride, padding, bn) by convolution name: the geometry lives in the spec
CONVS = {conv: (stride, pad, bn) for conv, _, _, _, stride, pad, bn in conv_layers()}


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, padding: int) -> jax.Array:
    """A bias-free convolution, NCHW x OIHW, padded ``padding`` on every side (torch's)."""
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=((padding, padding), (padding, padding)),
        dimension_numbers=DIMENSION_NUMBERS,
    )


def batch_statistics(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-channel mean and biased variance over (N, H, W), shaped (1, C, 1, 1)."""
    mean = jnp.mean(x, axis=(0, 2, 3), keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=(0, 2, 3), keepdims=True)
    return mean, var


def running_update(old: jax.Array, batch: jax.Array, momentum: float) -> jax.Array:
    """torch's running statistic: (1 - momentum) * old + momentum * batch."""
    return (1.0 - momentum) * old + momentum * batch


def batch_norm(x, gamma, beta, mean, var, eps):
    """(x - mean) / sqrt(var + eps) * gamma + beta, per channel of an NCHW ``x``."""
    channel = (1, -1, 1, 1)
    inv = 1.0 / jnp.sqrt(var.reshape(channel) + eps)
    return (x - mean.reshape(channel)) * inv * gamma.reshape(channel) + beta.reshape(channel)


class Forward:
    """One forward pass over ``params`` with BatchNorm in training mode (batch statistics,
    running statistics updated into ``new_stats``) or evaluation mode (running statistics)."""

    def __init__(self, params: Arrays, stats: Arrays, cfg: dict[str, Any], train: bool):
        self.params, self.stats, self.train = params, stats, train
        self.eps, self.momentum = cfg["bn_eps"], cfg["bn_momentum"]
        self.activations: Arrays = {}
        self.new_stats: Arrays = {}

    def record(self, name: str, value: jax.Array) -> jax.Array:
        self.activations[name] = value
        return value

    def bn(self, name: str, x: jax.Array) -> jax.Array:
        gamma, beta = self.params[f"{name}.weight"], self.params[f"{name}.bias"]
        old_mean, old_var = self.stats[f"{name}.running_mean"], self.stats[f"{name}.running_var"]
        if not self.train:
            return batch_norm(x, gamma, beta, old_mean, old_var, self.eps)
        mean, var = batch_statistics(x)
        n = x.shape[0] * x.shape[2] * x.shape[3]
        unbiased = var * (n / (n - 1))
        self.new_stats[f"{name}.running_mean"] = running_update(
            old_mean, mean.reshape(-1), self.momentum
        )
        self.new_stats[f"{name}.running_var"] = running_update(
            old_var, unbiased.reshape(-1), self.momentum
        )
        return batch_norm(x, gamma, beta, mean, var, self.eps)

    def conv_bn(self, conv: str, x: jax.Array) -> jax.Array:
        stride, padding, bn = CONVS[conv]
        h = self.record(conv, conv2d(x, self.params[f"{conv}.weight"], stride, padding))
        return self.record(bn, self.bn(bn, h))

    def max_pool(self, x: jax.Array) -> jax.Array:
        """3x3, stride 2, padding 1 (torch's MaxPool2d): -inf padding never wins a window."""
        pad = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-jnp.inf)
        init = np.array(-np.inf, dtype=x.dtype)  # concrete: lax.max's identity, differentiable
        return lax.reduce_window(pad, init, lax.max, (1, 1, 3, 3), (1, 1, 2, 2), "VALID")

    def block(self, name: str, downsample: bool, x: jax.Array) -> jax.Array:
        """torchvision's BasicBlock: conv-bn-relu, conv-bn, + shortcut, relu."""
        h = jax.nn.relu(self.conv_bn(f"{name}.conv1", x))
        h = self.conv_bn(f"{name}.conv2", h)
        shortcut = self.conv_bn(f"{name}.downsample.0", x) if downsample else x
        return self.record(name, jax.nn.relu(h + shortcut))

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.record("relu", jax.nn.relu(self.conv_bn("conv1", x)))
        h = self.record("maxpool", self.max_pool(h))
        for name, downsample in blocks():
            h = self.block(name, downsample, h)
        h = self.record("avgpool", jnp.mean(h, axis=(2, 3)))
        return self.record("fc", h @ self.params["fc.weight"].T + self.params["fc.bias"])


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy on integer labels, the batch mean (``nn.CrossEntropyLoss``)."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=-1))


def make_train_step(cfg: dict[str, Any], optimizer: SGD):
    def loss_fn(params, stats, x, y):
        forward = Forward(params, stats, cfg, train=True)
        loss = cross_entropy(forward(x), y)
        return loss, (forward.activations, forward.new_stats)

    def train_step(params, buffers, stats, x, y):
        (loss, (activations, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, stats, x, y
        )
        # torch.optim.SGD: buf = momentum * buf + g (the first step's buffer is g: buffers
        # start at zero, and 0.9 * 0 + g is g exactly); p -= lr * buf
        params, buffers = optimizer.update(params, grads, buffers, ())
        logits = Forward(params, stats, cfg, train=False)(x)
        return loss, grads, params, buffers, stats, activations, logits

    return train_step


class Trainer(base.Trainer):
    optimizer_state = "buffers"
    model_state = "stats"

    def __init__(self, state, backend):
        if state.config.get("optimizer", "sgd") != "sgd":
            raise ValueError(
                f"resnet18's JAX port trains with SGD, not {state.config['optimizer']}"
            )
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(np.asarray(state.data["y"]).astype(np.int32))
        self.params = {n: backend.to_native(v) for n, v in state.params.items()}
        self.optimizer = SGD(state.config)
        self.buffers = self.optimizer.init(self.params)
        running = initial_state(state.config)
        self.stats = {n: backend.to_native(v.astype(state.dtype)) for n, v in running.items()}
        self.step = backend.transform(make_train_step(state.config, self.optimizer))

    def run_step(self) -> None:
        out = self.step(self.params, self.buffers, self.stats, self.x, self.y)
        self.loss, self.grads, self.params, self.buffers, self.stats = out[:5]
        self.activations, self.logits = out[5:]
        self.backend.track(out)

    def record(self):
        """The step in the canonical names and order (a pytree of dicts leaves ``jax.jit`` with
        its keys sorted: the spec's order is restored here)."""
        return step_record(
            self.backend.to_numpy,
            self.loss,
            {n: self.grads[n] for n in PARAM_NAMES},
            {n: self.params[n] for n in PARAM_NAMES},
            activations={n: self.activations[n] for n in ACTIVATION_NAMES},
            state={n: self.stats[n] for n in STATE_NAMES},
            evaluation={"logits": self.logits},
        )


def build(state, backend):
    return Trainer(state, backend)
