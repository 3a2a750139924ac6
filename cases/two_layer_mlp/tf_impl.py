"""two_layer_mlp in TensorFlow: the seed's TF 2.0 program, and its TF 1.0 program in v1graph.

TF 2.0 (eager, ``tf.function``, XLA): ``tf.Variable`` weights, the forward pass under a
``tf.GradientTape``, ``tape.gradient``, ``assign_sub``; the whole step is the function the mode
transforms, called with tensors and variables only, so it is traced once.
TF 1.0 (v1graph): placeholders for x and y, ``tf.gradients``, the update as ``assign_sub`` ops in
the graph, one ``Session.run`` per step with a ``feed_dict`` (``equiv.support.tf.GraphTrainer``
builds and runs that graph around this file's loss and update).

The loss is the case's sum of squared errors, not the seed's TF
``reduce_mean(reduce_sum(diff**2, axis=1))``. The hidden layer is ``tf.nn.relu``: the seed's
``tf.maximum(h, 0)`` sends the gradient through at h == 0 exactly, the reference does not.
"""

import tensorflow as tf

from equiv.support.tf import GraphTrainer, Trainer


def forward_loss(x, y, w1, w2):
    y_pred = tf.matmul(tf.nn.relu(tf.matmul(x, w1)), w2)
    return tf.reduce_sum((y_pred - y) ** 2)


class SGD:
    """w -= lr * grad: one ``assign_sub`` a weight, run eagerly, traced, or built into a TF1
    graph (where only the ops the step runs take effect)."""

    def __init__(self, weights, cfg, dtype):
        self.lr = cfg["lr"]

    def updates(self, weights, grads):
        return [w.assign_sub(self.lr * g) for w, g in zip(weights, grads, strict=True)]


def make_train_step(optimizer, forward_loss=forward_loss):
    def train_step(x, y, w1, w2):
        with tf.GradientTape() as tape:
            loss = forward_loss(x, y, w1, w2)
        grads = tape.gradient(loss, [w1, w2])
        optimizer.updates([w1, w2], grads)
        return loss, grads

    return train_step


def build(state, backend):
    if backend.mode == "v1graph":
        return GraphTrainer(state, backend, forward_loss, SGD)
    return Trainer(state, backend, make_train_step, SGD)
