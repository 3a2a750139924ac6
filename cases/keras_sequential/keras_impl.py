"""keras_sequential in Keras 3: the seed's "Keras: High-level API" program.

``keras.Sequential`` with an ``Input`` layer, ``Dense(H, relu)`` and ``Dense(D_out)``,
``keras.losses.MeanSquaredError`` and ``keras.optimizers.SGD`` (or ``Adam`` when the case
config asks for it), the same code on the tensorflow, torch and jax backends. The seed trains
with ``opt.minimize(step, params)``: that is Keras 2; Keras 3 optimizers have no ``minimize``, so
the step takes the gradient with the backend's autodiff (``backend.value_and_grad``: a
``GradientTape`` on TensorFlow) and calls ``apply_gradients`` (``equiv.support.keras.Trainer``).
The seed's ``loss_fn(y_pred, y)`` swaps Keras's (y_true, y_pred) order, harmless for a squared
error; here it is in order.

Keras defaults that would otherwise differ from the case: layers and the loss compute in
``floatx()`` (float32) unless given a dtype, so each gets the cell's; the learning rate is a
``floatx()`` variable, so the optimizer is built under the cell's floatx; Adam's epsilon is
taken from the config, defaulting to the reference's 1e-8 (Keras's default is 1e-7).
Kernels are (in, out) in Keras as in the canonical state: ``load_dense`` takes them as they are.
"""

import functools

import keras

from equiv.support.keras import Trainer, load_dense


def make_optimizer(cfg):
    if cfg["optimizer"] == "adam":
        return keras.optimizers.Adam(
            learning_rate=cfg["lr"],
            beta_1=cfg.get("beta_1", 0.9),
            beta_2=cfg.get("beta_2", 0.999),
            epsilon=cfg.get("epsilon", 1e-8),
        )
    return keras.optimizers.SGD(learning_rate=cfg["lr"])


def make_model(state):
    """The model, loaded with the canonical parameters, and its variables by canonical name."""
    cfg, p, dtype = state.config, state.params, state.dtype
    model = keras.Sequential(
        [
            keras.Input(shape=(cfg["D_in"],), dtype=dtype),
            keras.layers.Dense(cfg["H"], activation="relu", dtype=dtype),
            keras.layers.Dense(cfg["D_out"], dtype=dtype),
        ]
    )
    dense1, dense2 = model.layers
    load_dense(dense1, p["w1"], p["b1"])
    load_dense(dense2, p["w2"], p["b2"])
    return model, {"w1": dense1.kernel, "b1": dense1.bias, "w2": dense2.kernel, "b2": dense2.bias}


def build(state, backend, trainer=Trainer):
    """``trainer``: ``equiv.support.keras.Trainer``, or a subclass (minibatch's, on batches)."""
    model, named = make_model(state)
    loss_fn = keras.losses.MeanSquaredError(dtype=state.dtype)
    optimizer = functools.partial(make_optimizer, state.config)
    return trainer(state, backend, named, loss_fn, optimizer, model)
