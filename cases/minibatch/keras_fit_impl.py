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

``load_state`` (the reference's training state at a later step, in place): between two steps
``fit``'s thread waits inside its loop, and the harness's thread must not write the model's
variables under it. So ``load_state`` checks the state and leaves it with ``StateLoader``, a
callback of the same ``fit`` call, which assigns it in ``fit``'s own thread when the next batch
begins, before the train step: the parameters (canonical layouts are Keras's) and the
optimizer's state (``equiv.support.keras.load_training_state``). The model, its compiled train
function and ``fit``'s data position (which batch comes next) stay ``fit``'s own: the data
position is no part of the training state.
"""

import functools

import keras

from cases.keras_sequential.keras_impl import make_model, make_optimizer
from equiv.contract.trainer import StateNotLoadable
from equiv.support.keras import load_training_state
from equiv.support.records import step_record

NOT_OBSERVED = {
    "grads": "model.fit computes and applies the gradients inside its train step; no "
    "callback sees them",
}


class StateLoader(keras.callbacks.Callback):
    """Assigns a training state left in ``pending`` when ``fit``'s next batch begins (after
    the lockstep callback has let it run), in ``fit``'s thread, before its train step."""

    def __init__(self, model, named):
        super().__init__()
        self.target, self.named = model, named
        self.pending = None

    def on_train_batch_begin(self, batch, logs=None):
        resume, self.pending = self.pending, None
        if resume is not None:
            optimizer = self.target.optimizer
            if not optimizer.built:  # on TensorFlow fit builds it when its train step traces
                optimizer.build(self.target.trainable_variables)
            load_training_state("model.fit's trainer", optimizer, self.named, resume)


def run_fit(model, x, y, cfg, backend, dtype, loader, callback):
    with backend.floatx(dtype):
        model.fit(
            x,
            y,
            batch_size=cfg["batch_size"],
            epochs=cfg["epochs"],
            shuffle=False,
            verbose=0,
            callbacks=[callback, loader],  # the lockstep callback first: it waits
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
        self.loader = StateLoader(model, named)  # holds no trainer: stepped_fit's rule
        self.fit = backend.stepped_fit(
            self,
            functools.partial(run_fit, model, x, y, cfg, backend, dtype, self.loader),
            functools.partial(observe, named, backend.to_numpy),
        )

    def load_state(self, resume):
        """Checked here, assigned by ``fit``'s thread before the next batch (``StateLoader``)."""
        if resume.state:
            raise StateNotLoadable(
                "model.fit's trainer maps variables only, not the model's non-trainable state "
                f"({', '.join(sorted(resume.state))})"
            )
        self.loader.pending = resume

    def run_step(self):
        self.last = self.fit.step()

    def record(self):
        return self.last


def build(state, backend):
    return Trainer(state, backend)
