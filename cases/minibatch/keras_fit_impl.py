"""minibatch through Keras's own training loop: ``model.compile`` and ``model.fit`` (backend
``keras.fit``), as most Keras users train.

The model, loss and optimizer are keras_sequential's Keras code (TwoLayerNet is its model);
what changes is who runs the loop. ``fit`` gets the whole data as numpy arrays and batches them
itself: the case's ``batch_size`` (``fit``'s default is 32), ``shuffle=False`` (``fit``
shuffles by default) and the case's epochs; its partial last batch is averaged over its own
size, as the reference's. ``jit_compile``
is off, as ``"auto"`` resolves it on a CPU-only TensorFlow; ``fit``'s train step is still a
``tf.function``.

Observed after each batch (``keras.fit``'s stepped fit): the parameters, read from the model,
and the batch's loss from ``fit``'s logs. The gradients are applied inside ``fit``'s train step
and never leave it: declared ``not_observed``.

Two float64 traps of ``fit``, both scoped by building and fitting under ``floatx(dtype)``:
``fit``'s data adapter casts float arrays to ``floatx()`` (float32 by default), and
``compile`` creates the loss tracker, whose mean is the logged loss, in ``floatx()``.
"""

import functools

import keras

from cases.keras_sequential.keras_impl import make_model, make_optimizer
from equiv.support.records import step_record

NOT_OBSERVED = {
    "grads": "model.fit computes and applies the gradients inside its train step; no "
    "callback sees them",
}


def run_fit(model, x, y, cfg, backend, dtype, callback):
    with backend.floatx(dtype):
        model.fit(
            x,
            y,
            batch_size=cfg["batch_size"],
            epochs=cfg["epochs"],
            shuffle=False,
            verbose=0,
            callbacks=[callback],
        )


def observe(named, to_numpy, logs):
    return step_record(to_numpy, logs["loss"], {}, named)


class Trainer:
    not_observed = NOT_OBSERVED

    def __init__(self, state, backend):
        cfg, dtype = state.config, state.dtype
        with backend.floatx(dtype):
            model, named = make_model(state)
            model.compile(
                optimizer=make_optimizer(cfg),
                loss=keras.losses.MeanSquaredError(dtype=dtype),
                jit_compile=False,
            )
        x, y = state.data["x"], state.data["y"]
        self.fit = backend.stepped_fit(
            self,
            functools.partial(run_fit, model, x, y, cfg, backend, dtype),
            functools.partial(observe, named, backend.to_numpy),
        )

    def run_step(self):
        self.last = self.fit.step()

    def record(self):
        return self.last


def build(state, backend):
    return Trainer(state, backend)
