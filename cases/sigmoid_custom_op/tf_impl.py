"""sigmoid_custom_op in TensorFlow: the sigmoid as a ``tf.custom_gradient`` op.

The forward returns y = 1 / (1 + exp(-h)) and a hand-written backward grad_y * y * (1 - y)
that closes over y, as the seed's ``torch.autograd.Function`` saves it. ``tf.custom_gradient``
is honoured by the tape (eager, ``tf.function``, XLA) and by ``tf.gradients`` in a TF1 graph,
so the four modes share the op; the rest is two_layer_mlp's TF code (its step and SGD) with
the sigmoid hidden layer.
"""

import functools

import tensorflow as tf

from cases.two_layer_mlp.tf_impl import SGD, make_train_step
from equiv.support.tf import GraphTrainer, Trainer


@tf.custom_gradient
def sigmoid(h):
    y = 1.0 / (1.0 + tf.exp(-h))

    def backward(grad_y):
        return grad_y * y * (1.0 - y)

    return y, backward


def forward_loss(x, y, w1, w2):
    y_pred = tf.matmul(sigmoid(tf.matmul(x, w1)), w2)
    return tf.reduce_sum((y_pred - y) ** 2)


def build(state, backend):
    if backend.mode == "v1graph":
        return GraphTrainer(state, backend, forward_loss, SGD)
    train_step = functools.partial(make_train_step, forward_loss=forward_loss)
    return Trainer(state, backend, train_step, SGD)
