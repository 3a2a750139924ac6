"""parallel_blocks in plain TensorFlow: the model's maths written by hand over ``tf.Variable``s.

Each ParallelBlock is relu((x @ w1 + b1) * (x @ w2 + b2)) with kernels in the canonical
(in, out) layout; the loss is the mean of squared errors over every element (as ``mse_loss``);
Adam is keras_sequential's, written out as variables and update ops in the form of the paper's
Algorithm 1 (``torch.optim.Adam``'s). The rest is keras_sequential's TF code over this loss:
TF 2.0 (eager, ``tf.function``, XLA): the whole step is the function the mode transforms,
traced once. TF 1.0 (v1graph): placeholders for x and y, ``tf.gradients``, the update ops in
the graph, one ``Session.run`` per step.
"""

import tensorflow as tf

from cases.keras_sequential import tf_impl as sequential
from cases.parallel_blocks.spec import BLOCKS, PARAM_NAMES


def parallel_block(x, w1, b1, w2, b2):
    h1 = tf.matmul(x, w1) + b1
    h2 = tf.matmul(x, w2) + b2
    return tf.nn.relu(h1 * h2)


def forward_loss(x, y, *variables):
    """The parameters in the case's order (``PARAM_NAMES``)."""
    params = dict(zip(PARAM_NAMES, variables, strict=True))
    h = x
    for prefix in BLOCKS:
        h = parallel_block(h, *(params[f"{prefix}_{n}"] for n in ("w1", "b1", "w2", "b2")))
    y_pred = tf.matmul(h, params["out_w"]) + params["out_b"]
    return tf.reduce_mean(tf.square(y_pred - y))


def build(state, backend):
    return sequential.build(state, backend, forward_loss)
