"""two_layer_mlp in Keras 3, the same code on the tensorflow, torch and jax backends.

``Dense(H, relu, use_bias=False)`` then ``Dense(D_out, use_bias=False)`` in a ``Sequential``; a
sum-of-squares loss (``equiv.support.keras.SumSquaredError``: Keras has none built in,
``MeanSquaredError`` averages); ``keras.optimizers.SGD`` is plain gradient descent. Every layer
and the loss get the cell's dtype explicitly: a Keras loss otherwise computes in ``floatx()``,
float32. The gradient comes from the backend's autodiff (``backend.value_and_grad``; Keras 3 has
no neutral one), applied by ``apply_gradients`` (``equiv.support.keras.Trainer``).
"""

import functools

import keras

from equiv.support.keras import SumSquaredError, Trainer, load_dense


def relu_hidden(cfg, dtype):
    return [keras.layers.Dense(cfg["H"], activation="relu", use_bias=False, dtype=dtype)]


def build(state, backend, hidden=relu_hidden):
    """``hidden(cfg, dtype)``: the layers from x to the hidden activations, the first of them
    the Dense layer of w1 (sigmoid_custom_op gives its own)."""
    cfg, dtype = state.config, state.dtype
    model = keras.Sequential(
        [
            keras.Input(shape=(cfg["D_in"],), dtype=dtype),
            *hidden(cfg, dtype),
            keras.layers.Dense(cfg["D_out"], use_bias=False, dtype=dtype),
        ]
    )
    dense1, dense2 = model.layers[0], model.layers[-1]
    load_dense(dense1, state.params["w1"])
    load_dense(dense2, state.params["w2"])
    named = {"w1": dense1.kernel, "w2": dense2.kernel}
    sgd = functools.partial(keras.optimizers.SGD, learning_rate=cfg["lr"])
    return Trainer(state, backend, named, SumSquaredError(dtype), sgd, model)
