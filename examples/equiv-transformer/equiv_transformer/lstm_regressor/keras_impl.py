"""The LSTM regressor ported to Keras 3: one functional model, the same code on TensorFlow,
torch and jax.

``keras.layers.LSTM(H, return_sequences=True)`` (so that its output is the sequence, as
torch's; the head reads the last step, ``seq[:, -1]``), ``keras.layers.Dense(out)``,
``keras.losses.MeanSquaredError`` and ``keras.optimizers.SGD`` (or ``Adam``, as the config
names). Every layer gets the cell's dtype; ``equiv.support.keras_port.port`` builds the
optimizer under it, steps and records.

Keras 3.15's LSTM (keras/src/layers/rnn/lstm.py) is torch's cell: gates i, f, c, o in torch's
order, activation tanh and recurrent_activation sigmoid by default, ``kernel`` (F, 4H) and
``recurrent_kernel`` (H, 4H) as the canonical (in, out) kernels. It holds ONE ``bias`` (4H,),
added once to the gate pre-activations, where torch holds ``bias_ih`` and ``bias_hh``: the
layout ``equiv.layouts.keras_lstm`` loads their sum and reports the observable
``lstm.bias_ih+bias_hh`` (the harness compares that), and its SGD moves the sum half as far
as torch's: declared in the spec (``SINGLE_BIAS``). ``unit_forget_bias=True`` only sets the
initial forget-gate bias, which is loaded over.
"""

import keras
from equiv import layouts
from equiv.support.keras_port import port


def make_model(cfg, dtype):
    x = keras.Input(shape=(cfg["T"], cfg["F"]), dtype=dtype)
    seq = keras.layers.LSTM(cfg["H"], return_sequences=True, dtype=dtype, name="lstm")(x)
    out = keras.layers.Dense(cfg["out"], dtype=dtype, name="head")(seq[:, -1])
    return keras.Model(x, out)


def layout(cfg):
    parts = {
        "lstm": layouts.keras_lstm(cfg["F"], cfg["H"]),
        "head": layouts.keras_dense(cfg["H"], cfg["out"]),
    }
    return layouts.compose("lstm_regressor", parts, framework_sep="/")


def make_optimizer(cfg):
    if cfg["optimizer"] == "adam":
        return keras.optimizers.Adam(
            learning_rate=cfg["lr"],
            beta_1=cfg["beta_1"],
            beta_2=cfg["beta_2"],
            epsilon=cfg["epsilon"],
        )
    return keras.optimizers.SGD(learning_rate=cfg["lr"])


def build(state, backend):
    cfg, dtype = state.config, state.dtype
    return port(
        state,
        backend,
        make_model(cfg, dtype),
        layout=layout(cfg),
        loss=keras.losses.MeanSquaredError(dtype=dtype),
        optimizer=lambda: make_optimizer(cfg),
    )
