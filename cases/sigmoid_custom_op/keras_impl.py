"""sigmoid_custom_op in Keras 3: a ``Sigmoid`` layer around a ``keras.ops.custom_gradient`` op.

The op returns y = 1 / (1 + exp(-h)) and a hand-written backward grad_y * y * (1 - y). Keras 3
maps ``ops.custom_gradient`` to ``tf.custom_gradient``, a ``torch.autograd.Function`` and
``jax.custom_gradient``, so the same layer runs on all three backends; the backward takes
``(*args, upstream=None)`` because torch passes the upstream gradient by keyword and TF and jax
positionally (the form Keras documents for backend-neutral code). The rest is two_layer_mlp's
Keras code with this layer between the Dense layers.
"""

import keras
from keras import ops

from cases.two_layer_mlp import keras_impl as two_layer_mlp


@ops.custom_gradient
def sigmoid(h):
    y = 1.0 / (1.0 + ops.exp(-h))

    def backward(*args, upstream=None):
        grad_y = args[0] if upstream is None else upstream
        return grad_y * y * (1.0 - y)

    return y, backward


class Sigmoid(keras.layers.Layer):
    def call(self, h):
        return sigmoid(h)


def sigmoid_hidden(cfg, dtype):
    return [keras.layers.Dense(cfg["H"], use_bias=False, dtype=dtype), Sigmoid(dtype=dtype)]


def build(state, backend):
    return two_layer_mlp.build(state, backend, sigmoid_hidden)
