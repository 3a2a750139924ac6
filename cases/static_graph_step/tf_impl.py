"""static_graph_step in TensorFlow: the whole step, branch included, as one graph.

The branch is ``tf.cond`` on the previous loss, which lives in a ``tf.Variable`` (a Python float
argument would retrace ``tf.function`` on every new value); forward, ``tf.cond``, gradients,
the update (two_layer_mlp's SGD) and storing the new loss are all inside the step. In
``tf.function`` and XLA the cond is a graph op (If) traced once; ``tf.eager`` runs the same
step op by op as the control, where ``tf.cond`` just calls the branch taken. In v1graph the
same ops are built in a TF1 graph with placeholders and ``tf.gradients``. Gradients of the w2
the cond did not take are zeros (``UnconnectedGradients.ZERO`` where the tape or
``tf.gradients`` sees no path).
"""

import functools

import tensorflow as tf

from cases.two_layer_mlp.tf_impl import SGD
from equiv.support import tf as support

ZERO = tf.UnconnectedGradients.ZERO


def forward_loss(x, y, w1, w2a, w2b, use_a):
    h = tf.nn.relu(tf.matmul(x, w1))
    y_pred = tf.cond(use_a, lambda: tf.matmul(h, w2a), lambda: tf.matmul(h, w2b))
    return tf.reduce_sum((y_pred - y) ** 2)


def make_train_step(optimizer, threshold):
    def train_step(x, y, w1, w2a, w2b, prev_loss):
        use_a = prev_loss < threshold
        with tf.GradientTape() as tape:
            loss = forward_loss(x, y, w1, w2a, w2b, use_a)
        grads = tape.gradient(loss, [w1, w2a, w2b], unconnected_gradients=ZERO)
        optimizer.updates([w1, w2a, w2b], grads)
        prev_loss.assign(loss)
        return loss, grads, use_a

    return train_step


class Trainer(support.Trainer):
    def __init__(self, state, backend):
        cfg = state.config
        make_step = functools.partial(make_train_step, threshold=cfg["threshold"])
        super().__init__(state, backend, make_step, SGD)
        self.prev_loss = tf.Variable(cfg["initial_prev_loss"], dtype=state.dtype, name="prev")

    def run_step(self):
        loss, grads, self.use_a = self.step(self.x, self.y, *self.weights.values(), self.prev_loss)
        self.last = (loss, grads)

    @property
    def branch(self):
        return "w2a" if bool(self.use_a) else "w2b"

    def load_prev_loss(self, value):
        """Into the variable the step's ``tf.cond`` reads (``load_state``)."""
        self.assign([(self.prev_loss, value)])


class GraphTrainer(support.GraphTrainer):
    """TF 1.0: the step, tf.cond included, is one graph; every step is one Session.run."""

    def train_ops(self, x, y, optimizer):
        cfg, dtype = self.config, x.dtype
        prev_loss = self.prev_loss = tf.Variable(
            cfg["initial_prev_loss"], dtype=dtype, name="prev_loss"
        )
        use_a = prev_loss < tf.constant(cfg["threshold"], dtype=dtype)
        weights = list(self.weights.values())
        loss = self.forward_loss(x, y, *weights, use_a)
        grads = tf.gradients(loss, weights, unconnected_gradients=ZERO)
        with tf.control_dependencies([loss, use_a, *grads]):
            update = tf.group(*optimizer.updates(weights, grads), prev_loss.assign(loss))
        return loss, grads, update, use_a

    def run_step(self):
        loss, grads, update, self.use_a = self.sess.run(self.fetches, feed_dict=self.feed)
        self.last = (loss, grads, update)

    branch = Trainer.branch
    load_prev_loss = Trainer.load_prev_loss


def build(state, backend):
    if backend.mode == "v1graph":
        return GraphTrainer(state, backend, forward_loss, SGD)
    return Trainer(state, backend)
