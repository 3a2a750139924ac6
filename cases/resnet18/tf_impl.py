"""resnet18 in plain TensorFlow: torchvision's ResNet-18 written over ``tf.Variable``s, NHWC.

No Keras: kernels are HWIO ``tf.Variable``s (``cases.resnet18.layout`` converts the canonical
OIHW state at the boundary, and back in ``record``), the data is fed NHWC, and every layer is a
``tf.nn`` op:

- convolutions are ``tf.nn.conv2d(..., padding="VALID")`` after an explicit symmetric
  ``tf.pad`` where torchvision pads: TF's ``padding="SAME"`` with stride 2 on an even size pads
  only bottom/right, another convolution (``tests/test_resnet18_tf.py`` plants it);
- BatchNorm in training mode is ``tf.nn.moments`` + ``tf.nn.batch_normalization`` (eps 1e-5),
  the running statistics updated torch's way: new = (1 - 0.1) * old + 0.1 * batch, the
  running variance from the UNBIASED batch variance (n / (n - 1), n = N*H*W), the
  normalisation with the biased one. Not ``fused_batch_norm``: its kernel has no float64
  (the cells run in both dtypes), and writing the statistics out shows the convention;
- the max-pool is ``tf.nn.max_pool2d(..., "VALID")`` after a -inf pad (torch's padding never
  wins a window), the average pool a ``reduce_mean`` over H and W, the classifier a matmul;
- the loss is ``tf.nn.sparse_softmax_cross_entropy_with_logits``, batch mean;
- SGD with momentum in torch's form: buf = momentum * buf + g; p -= lr * buf (the buffer
  starts at zero, so the first step's buffer is g exactly, as torch's clone of g).

TF 2.0 (eager, ``tf.function``, XLA): ``tf.GradientTape`` over the step that the backend's mode
transforms (traced once), and an evaluation forward (BatchNorm on the running statistics),
transformed too (a second trace), run by ``record`` after the update. TF 1.0 (v1graph): one
graph with placeholders, ``tf.gradients``, the parameter, momentum and running-statistic updates
as ops run after the loss and gradients, and the evaluation logits as a second fetch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from cases.resnet18 import layout
from cases.resnet18.spec import ACTIVATION_NAMES, PARAM_NAMES, blocks, initial_state
from equiv.support.records import step_record
from equiv.support.tf import (
    GraphTrainer,
    Trainer,
    refuse_unknown,
    train_op,
    variables,
    zeros_like,
)


def conv(x, kernel, stride: int, padding: int):
    """torch's Conv2d(padding=p, stride=s, bias=False): p rows and columns on every side."""
    if padding:
        x = tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    return tf.nn.conv2d(x, kernel, strides=stride, padding="VALID")


def max_pool(x):
    """torch's MaxPool2d(3, stride 2, padding 1): the pad is -inf, so it never wins."""
    x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-np.inf)
    return tf.nn.max_pool2d(x, ksize=3, strides=2, padding="VALID")


def max_pool_of_slices(x):
    """``max_pool`` as the maximum of its window's nine strided slices, for XLA: with op
    determinism on (the harness sets it), TF refuses to compile ``MaxPoolGrad`` to XLA ("do not
    yet have a deterministic XLA implementation"). ``tf.maximum`` sends a tie's gradient to its
    first argument, so the first maximum in the window's row-major order takes it, as torch's."""
    x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=-np.inf)
    size = (x.shape[1] - 3) // 2 + 1
    out = None
    for i in range(3):
        for j in range(3):
            window = x[:, i : i + 2 * size : 2, j : j + 2 * size : 2, :]
            out = window if out is None else tf.maximum(out, window)
    return out


class TrainBatchNorm:
    """BatchNorm in training mode: normalise with the batch's statistics and update the running
    ones (``self.updates``: effects in eager and ``tf.function``, ops a TF1 graph must run)."""

    def __init__(self, stats: dict[str, tf.Variable], cfg):
        self.stats = stats
        self.eps = cfg["bn_eps"]
        self.momentum = cfg["bn_momentum"]
        self.updates: list = []

    def __call__(self, name, x, gamma, beta):
        mean, var = tf.nn.moments(x, axes=[0, 1, 2])
        n = int(np.prod(x.shape[:3]))
        unbiased = var * (n / (n - 1))
        m = self.momentum
        running_mean = self.stats[f"{name}.running_mean"]
        running_var = self.stats[f"{name}.running_var"]
        self.updates.append(running_mean.assign((1 - m) * running_mean + m * mean))
        self.updates.append(running_var.assign((1 - m) * running_var + m * unbiased))
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, self.eps)


class EvalBatchNorm:
    """BatchNorm in evaluation mode: normalise with the running statistics, change nothing."""

    def __init__(self, stats: dict[str, tf.Variable], cfg):
        self.stats = stats
        self.eps = cfg["bn_eps"]

    def __call__(self, name, x, gamma, beta):
        mean = self.stats[f"{name}.running_mean"]
        var = self.stats[f"{name}.running_var"]
        return tf.nn.batch_normalization(x, mean, var, beta, gamma, self.eps)


def forward(x, p, batch_norm, pool=max_pool):
    """ResNet-18 on NHWC ``x`` with parameters ``p`` (canonical names, channels-last values):
    the logits and every ``ACTIVATION_NAMES`` output (NHWC), in torchvision's order."""
    acts = {}

    def conv_bn(name, bn, h, stride, padding):
        h = acts[name] = conv(h, p[f"{name}.weight"], stride, padding)
        acts[bn] = batch_norm(bn, h, p[f"{bn}.weight"], p[f"{bn}.bias"])
        return acts[bn]

    h = acts["relu"] = tf.nn.relu(conv_bn("conv1", "bn1", x, 2, 3))
    h = acts["maxpool"] = pool(h)
    for block, downsample in blocks():
        stride = 2 if downsample else 1
        out = tf.nn.relu(conv_bn(f"{block}.conv1", f"{block}.bn1", h, stride, 1))
        out = conv_bn(f"{block}.conv2", f"{block}.bn2", out, 1, 1)
        if downsample:
            h = conv_bn(f"{block}.downsample.0", f"{block}.downsample.1", h, stride, 0)
        h = acts[block] = tf.nn.relu(out + h)
    h = acts["avgpool"] = tf.reduce_mean(h, axis=[1, 2])
    acts["fc"] = tf.matmul(h, p["fc.weight"]) + p["fc.bias"]
    return acts["fc"], {name: acts[name] for name in ACTIVATION_NAMES}


def cross_entropy(logits, y):
    labels = tf.cast(y, tf.int32)  # stored as floats
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))


class SGDMomentum:
    """torch.optim.SGD(momentum=m): buf = m * buf + g; p -= lr * buf."""

    def __init__(self, weights, cfg, dtype):
        self.lr, self.momentum = cfg["lr"], cfg["momentum"]
        self.buffers = [tf.Variable(tf.zeros(w.shape, dtype=dtype)) for w in weights]

    def updates(self, weights, grads):
        out = []
        for w, g, buf in zip(weights, grads, self.buffers, strict=True):
            b = buf.assign(self.momentum * buf + g)
            out.append(w.assign_sub(self.lr * b))
        return out

    def slot_values(self, canonical, names):
        """The canonical ``momentum/<p>`` is this buffer (torch's form, both); absent, the zero
        buffer a first step starts from."""
        refuse_unknown(self, canonical, ("momentum",))
        return [
            (buf, canonical.get(f"momentum/{name}", zeros_like(buf)))
            for name, buf in zip(names, self.buffers, strict=True)
        ]


def channels_last(state):
    """The cell's state with x NHWC and every parameter channels-last (kernels HWIO, fc.weight
    (in, out)): what the variables and the feed hold."""
    data = {
        **state.data,
        "x": np.ascontiguousarray(layout.activation_to_channels_last(state.data["x"])),
    }
    params = {
        name: np.ascontiguousarray(layout.param_to_channels_last(name, value))
        for name, value in state.params.items()
    }
    return dataclasses.replace(state, data=data, params=params)


def running_stats(cfg, dtype) -> dict[str, tf.Variable]:
    """BatchNorm's running mean and variance (``spec.initial_state``) as variables."""
    return variables({k: v.astype(dtype) for k, v in initial_state(cfg).items()})


def canonical(to_numpy, values) -> dict:
    """Native channels-last values by canonical name -> canonical numpy arrays."""
    return {n: layout.param_to_canonical(n, to_numpy(v)) for n, v in values.items()}


def record(to_numpy, loss, grads, params, acts, stats, logits):
    return step_record(
        to_numpy,
        loss,
        canonical(to_numpy, dict(zip(PARAM_NAMES, grads, strict=True))),
        canonical(to_numpy, params),
        activations={n: layout.activation_to_canonical(to_numpy(a)) for n, a in acts.items()},
        state=stats,
        evaluation={"logits": logits},
    )


class ChannelsLast:
    """What both trainers' ``load_state`` (the support base's) needs to know of this port: the
    variables hold the parameters and their momentum buffers channels-last, and the running
    statistics are ``self.stats``."""

    def port_layout(self, name, value):
        return layout.param_to_channels_last(name, value)

    def model_state(self):
        return self.stats


class ResNetTrainer(ChannelsLast, Trainer):
    """TF 2.0: the step (loss, gradients, activations; updates as effects) and the evaluation
    forward, each transformed by the backend's mode."""

    def __init__(self, state, backend):
        self.config = state.config
        self.pool = max_pool_of_slices if backend.mode == "xla" else max_pool
        self.stats = running_stats(state.config, state.dtype)
        super().__init__(channels_last(state), backend, self.make_train_step, SGDMomentum)
        self.evaluate = backend.transform(self.eval_step)

    def make_train_step(self, optimizer):
        # no tensor-dependent control flow: autograph would only spend seconds transpiling
        @tf.autograph.experimental.do_not_convert
        def train_step(x, y, *weights):
            with tf.GradientTape() as tape:
                params = dict(zip(PARAM_NAMES, weights, strict=True))
                batch_norm = TrainBatchNorm(self.stats, self.config)
                logits, acts = forward(x, params, batch_norm, self.pool)
                loss = cross_entropy(logits, y)
            grads = tape.gradient(loss, weights)
            optimizer.updates(weights, grads)
            return loss, grads, acts

        return train_step

    @tf.autograph.experimental.do_not_convert
    def eval_step(self, x, *weights):
        params = dict(zip(PARAM_NAMES, weights, strict=True))
        return forward(x, params, EvalBatchNorm(self.stats, self.config), self.pool)[0]

    def record(self):
        loss, grads, acts = self.last
        logits = self.evaluate(self.x, *self.weights.values())
        to_numpy = self.backend.to_numpy
        return record(to_numpy, loss, grads, self.weights, acts, self.stats, logits)


class ResNetGraphTrainer(ChannelsLast, GraphTrainer):
    """TF 1.0: the training fetches (loss, gradients, activations, and every update grouped
    after them) and the evaluation logits, a second fetch of the same graph."""

    def __init__(self, state, backend):
        super().__init__(channels_last(state), backend, forward, SGDMomentum)

    def train_ops(self, x, y, optimizer):
        weights = list(self.weights.values())
        self.stats = running_stats(self.config, x.dtype.as_numpy_dtype)
        params = dict(zip(PARAM_NAMES, weights, strict=True))
        batch_norm = TrainBatchNorm(self.stats, self.config)
        logits, acts = forward(x, params, batch_norm)
        loss, grads, update = train_op(cross_entropy(logits, y), weights, optimizer.updates)
        with tf.control_dependencies([loss, *grads]):
            update = tf.group(update, *batch_norm.updates)
        self.eval_logits = forward(x, params, EvalBatchNorm(self.stats, self.config))[0]
        return loss, grads, acts, update

    def record(self):
        loss, grads, acts, _ = self.last
        params, stats = self.sess.run((self.weights, self.stats))
        logits = self.sess.run(self.eval_logits, feed_dict=self.feed)
        return record(self.backend.to_numpy, loss, grads, params, acts, stats, logits)


def build(state, backend):
    if backend.mode == "v1graph":
        return ResNetGraphTrainer(state, backend)
    return ResNetTrainer(state, backend)
