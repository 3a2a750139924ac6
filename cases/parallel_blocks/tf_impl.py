"""parallel_blocks in plain TensorFlow: the model's maths written by hand over ``tf.Variable``s.

Each ParallelBlock is relu((x @ w1 + b1) * (x @ w2 + b2)) with kernels in the canonical
(in, out) layout; the loss is the mean of squared errors over every element (as ``mse_loss``);
Adam is keras_sequential's, written out as variables and update ops in the form of the paper's
Algorithm 1 (``torch.optim.Adam``'s). The parameters travel as one dict, name -> variable, in
the case's order. TF 2.0 (eager, ``tf.function``, XLA): the whole step is the function the
mode transforms, traced once. TF 1.0 (v1graph): placeholders for x and y, ``tf.gradients``,
the update ops in the graph, one ``Session.run`` per step.
"""

import tensorflow as tf

from cases.keras_sequential import tf_impl as sequential
from cases.parallel_blocks.spec import BLOCKS
from equiv.records import StepRecord


def parallel_block(x, w1, b1, w2, b2):
    h1 = tf.matmul(x, w1) + b1
    h2 = tf.matmul(x, w2) + b2
    return tf.nn.relu(h1 * h2)


def forward_loss(x, y, params):
    h = x
    for prefix in BLOCKS:
        h = parallel_block(h, *(params[f"{prefix}_{n}"] for n in ("w1", "b1", "w2", "b2")))
    y_pred = tf.matmul(h, params["out_w"]) + params["out_b"]
    return tf.reduce_mean(tf.square(y_pred - y))


def make_optimizer(params, cfg, dtype):
    return sequential.OPTIMIZERS[cfg["optimizer"]](list(params.values()), cfg, dtype)


def make_train_step(optimizer):
    def train_step(x, y, params):
        with tf.GradientTape() as tape:
            loss = forward_loss(x, y, params)
        grads = tape.gradient(loss, params)
        optimizer.updates(list(params.values()), list(grads.values()))
        return loss, grads

    return train_step


class Trainer(sequential.Trainer):
    """keras_sequential's trainer (its step) over the parameter dict."""

    def __init__(self, state, backend):
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.params = {n: tf.Variable(v, name=n) for n, v in state.params.items()}
        optimizer = make_optimizer(self.params, state.config, state.dtype)
        self.step = backend.transform(make_train_step(optimizer))

    def record(self):
        to_np = self.backend.to_numpy
        loss, grads = self.last
        return StepRecord(
            loss=to_np(loss)[()],
            grads={n: to_np(g) for n, g in grads.items()},
            params={n: to_np(p) for n, p in self.params.items()},
        )


class GraphTrainer(sequential.GraphTrainer):
    """TF 1.0: define the graph once, then run it many times (keras_sequential's step)."""

    def __init__(self, state, backend):
        graph = backend.new_graph()
        dtype = tf.as_dtype(state.dtype)
        data = state.data
        with graph.as_default():
            x = tf.compat.v1.placeholder(dtype, shape=data["x"].shape, name="x")
            y = tf.compat.v1.placeholder(dtype, shape=data["y"].shape, name="y")
            self.params = {n: tf.Variable(v, name=n) for n, v in state.params.items()}
            optimizer = make_optimizer(self.params, state.config, dtype)
            loss = forward_loss(x, y, self.params)
            variables = list(self.params.values())
            grads = dict(zip(self.params, tf.gradients(loss, variables), strict=True))
            with tf.control_dependencies([loss, *grads.values()]):
                update = tf.group(*optimizer.updates(variables, list(grads.values())))
            init = tf.compat.v1.global_variables_initializer()
        graph.finalize()
        self.sess = backend.session(graph)
        self.sess.run(init)
        self.fetches = (loss, grads, update)
        self.feed = {x: backend.to_native(data["x"]), y: backend.to_native(data["y"])}

    def record(self):
        loss, grads, _ = self.last
        return StepRecord(loss=loss[()], grads=grads, params=self.sess.run(self.params))


def build(state, backend):
    return GraphTrainer(state, backend) if backend.mode == "v1graph" else Trainer(state, backend)
