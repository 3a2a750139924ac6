"""keras_sequential in Keras 3: the seed's "Keras: High-level API" program.

``keras.Sequential`` with an ``Input`` layer, ``Dense(H, relu)`` and ``Dense(D_out)``,
``keras.losses.MeanSquaredError`` and ``keras.optimizers.SGD`` (or ``Adam`` when the case
config asks for it), the same code on the tensorflow, torch and jax backends. The seed trains
with ``opt.minimize(step, params)``: that is Keras 2; Keras 3 optimizers have no ``minimize``, so
the step (``equiv.support.keras_port``) takes the gradient with the backend's autodiff (a
``GradientTape`` on TensorFlow) and calls ``apply_gradients``. The seed's ``loss_fn(y_pred, y)``
swaps Keras's (y_true, y_pred) order, harmless for a squared error; here it is in order.

Keras defaults that would otherwise differ from the case: layers and the loss compute in
``floatx()`` (float32) unless given a dtype, so each gets the cell's; the learning rate is a
``floatx()`` variable, so the optimizer is built under the cell's floatx (``port`` does);
Adam's epsilon is taken from the config, defaulting to the reference's 1e-8 (Keras's default is
1e-7). A ``Dense`` kernel is (in, out), as the canonical one (``equiv.layouts.keras_dense``).
"""

import functools

import keras

from equiv import layouts
from equiv.support.keras_port import canonical_variables, load, port


def make_optimizer(cfg):
    if cfg["optimizer"] == "adam":
        return keras.optimizers.Adam(
            learning_rate=cfg["lr"],
            beta_1=cfg.get("beta_1", 0.9),
            beta_2=cfg.get("beta_2", 0.999),
            epsilon=cfg.get("epsilon", 1e-8),
        )
    return keras.optimizers.SGD(learning_rate=cfg["lr"])


def layout(cfg):
    """The layers ``hidden`` and ``out``, under the case's names."""
    dense = {
        "hidden": layouts.keras_dense(cfg["D_in"], cfg["H"]),
        "out": layouts.keras_dense(cfg["H"], cfg["D_out"]),
    }
    names = {"hidden.kernel": "w1", "hidden.bias": "b1", "out.kernel": "w2", "out.bias": "b2"}
    return layouts.compose("keras_sequential", dense, framework_sep="/").named(names)


def sequential(cfg, dtype):
    return keras.Sequential(
        [
            keras.Input(shape=(cfg["D_in"],), dtype=dtype),
            keras.layers.Dense(cfg["H"], activation="relu", dtype=dtype, name="hidden"),
            keras.layers.Dense(cfg["D_out"], dtype=dtype, name="out"),
        ]
    )


def make_model(state):
    """The model, loaded, and its variables by canonical name (minibatch's and keras.fit's)."""
    model = sequential(state.config, state.dtype)
    load(model, layout(state.config), state.params)
    return model, canonical_variables(model, layout(state.config))


def build(state, backend, trainer=None):
    """``trainer``: an ``equiv.support.keras.Trainer`` subclass (minibatch's, on batches)."""
    loss = keras.losses.MeanSquaredError(dtype=state.dtype)
    optimizer = functools.partial(make_optimizer, state.config)
    if trainer is not None:
        model, named = make_model(state)
        return trainer(state, backend, named, loss, optimizer, model)
    model = sequential(state.config, state.dtype)
    return port(state, backend, model, layout=layout(state.config), loss=loss, optimizer=optimizer)
