"""dynamic_branching in TensorFlow: the branch is Python, deciding between two steps.

TF 2.0 (eager, ``tf.function``, XLA): Python reads the previous loss (``float(loss)``) and
passes the chosen ``tf.Variable`` to the step; the step is compiled once and serves both
branches, since variables of one shape and dtype share a trace. The unused w2 is not on the
tape: its gradient is reported as zeros and it is not updated.
TF 1.0 (v1graph): the graph is static, so it holds one train op per branch (sharing w1 and the
placeholders) and Python chooses which one ``Session.run`` runs: the TF1 form of dynamic
control flow. static_graph_step puts the branch inside the graph instead.
"""

import numpy as np
import tensorflow as tf

from equiv.records import StepRecord

BRANCHES = ("w2a", "w2b")


def forward_loss(x, y, w1, w2):
    y_pred = tf.matmul(tf.nn.relu(tf.matmul(x, w1)), w2)
    return tf.reduce_sum((y_pred - y) ** 2)


def make_train_step(lr):
    def train_step(x, y, w1, w2):
        with tf.GradientTape() as tape:
            loss = forward_loss(x, y, w1, w2)
        grad_w1, grad_w2 = tape.gradient(loss, [w1, w2])
        w1.assign_sub(lr * grad_w1)
        w2.assign_sub(lr * grad_w2)
        return loss, grad_w1, grad_w2

    return train_step


class Trainer:
    def __init__(self, state, backend):
        self.backend = backend
        cfg = state.config
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.w = {n: tf.Variable(state.params[n], name=n) for n in ("w1", *BRANCHES)}
        self.threshold = cfg["threshold"]
        self.prev_loss = cfg["initial_prev_loss"]
        self.step = backend.transform(make_train_step(cfg["lr"]))

    def run_step(self):
        branch = "w2a" if self.prev_loss < self.threshold else "w2b"
        loss, g1, g2 = self.step(self.x, self.y, self.w["w1"], self.w[branch])
        self.prev_loss = float(loss)
        self.last = (loss, g1, g2, branch)

    def record(self):
        to_np = self.backend.to_numpy
        loss, g1, g2, branch = self.last
        params = {n: to_np(p) for n, p in self.w.items()}
        grads = {"w1": to_np(g1), "w2a": np.zeros_like(params["w2a"])}
        grads["w2b"] = np.zeros_like(params["w2b"])
        grads[branch] = to_np(g2)
        return StepRecord(loss=to_np(loss)[()], grads=grads, params=params, branch=branch)


class GraphTrainer:
    """TF 1.0: one graph with a train op per branch; Python picks the op to run."""

    def __init__(self, state, backend):
        self.backend = backend
        cfg = state.config
        graph = backend.new_graph()
        dtype = tf.as_dtype(state.dtype)
        with graph.as_default():
            self.x = tf.compat.v1.placeholder(dtype, shape=state.data["x"].shape, name="x")
            self.y = tf.compat.v1.placeholder(dtype, shape=state.data["y"].shape, name="y")
            self.w = {n: tf.Variable(state.params[n], name=n) for n in ("w1", *BRANCHES)}
            lr = tf.constant(cfg["lr"], dtype=dtype)
            self.fetches = {}
            for branch in BRANCHES:
                weights = [self.w["w1"], self.w[branch]]
                loss = forward_loss(self.x, self.y, *weights)
                grads = tf.gradients(loss, weights)
                with tf.control_dependencies([loss, *grads]):
                    update = tf.group(
                        *[w.assign_sub(lr * g) for w, g in zip(weights, grads, strict=True)]
                    )
                self.fetches[branch] = (loss, grads, update)
            init = tf.compat.v1.global_variables_initializer()
        graph.finalize()
        self.sess = backend.session(graph)
        self.sess.run(init)
        feed = {self.x: state.data["x"], self.y: state.data["y"]}
        self.feed = {k: backend.to_native(v) for k, v in feed.items()}
        self.threshold = cfg["threshold"]
        self.prev_loss = cfg["initial_prev_loss"]

    def run_step(self):
        branch = "w2a" if self.prev_loss < self.threshold else "w2b"
        loss, grads, _ = self.sess.run(self.fetches[branch], feed_dict=self.feed)
        self.prev_loss = float(loss)
        self.last = (loss, grads, branch)

    def record(self):
        loss, (g1, g2), branch = self.last
        params = self.sess.run(self.w)
        grads = {"w1": g1, "w2a": np.zeros_like(params["w2a"])}
        grads["w2b"] = np.zeros_like(params["w2b"])
        grads[branch] = g2
        return StepRecord(loss=loss[()], grads=grads, params=params, branch=branch)


def build(state, backend):
    return GraphTrainer(state, backend) if backend.mode == "v1graph" else Trainer(state, backend)
