"""Support for Keras 3 case code: weight loading, the sum-of-squares loss, the trainer.

A Keras case file shows its model (layers, a ``Sequential``), its loss and optimizer, and
``build``. What every Keras trainer does besides is here, the same on the tensorflow, torch and
jax backends:

- ``load_dense``: canonical kernels are (in, out), as a ``Dense`` kernel is, so they load as
  they are; a wrong shape is refused with the layer's name and both shapes;
- ``SumSquaredError``: the seed's torch loss, which Keras does not have (``MeanSquaredError``
  averages);
- ``Trainer``: Keras 3 optimizers have no ``minimize`` (the seed's ``opt.minimize`` is Keras
  2), so a step is the backend's autodiff (``backend.value_and_grad``: a ``GradientTape`` on
  TensorFlow) and ``optimizer.apply_gradients``; then the record;
- ``load_optimizer`` and ``load_training_state``: the reference's training state at a later
  step into a running Keras model, in place (``Trainer.load_state``; a port of its own that
  converts layouts calls them with converted arrays).

Two float64 traps are handled once here: a loss given no dtype computes in ``floatx()``
(float32), so ``SumSquaredError`` takes the cell's; an optimizer's learning rate is a variable
of ``floatx()``, so ``Trainer`` builds the optimizer under the cell's ``floatx``. This module
imports keras: only Keras case code imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from equiv.contract.records import CaseState, StepRecord, TrainingState
from equiv.contract.trainer import StateNotLoadable
from equiv.support.records import step_record

if TYPE_CHECKING:
    from equiv.backends.keras import KerasBackend


class SumSquaredError(keras.losses.Loss):
    """sum((y_pred - y_true)^2) over every element, computed in ``dtype``."""

    def __init__(self, dtype: str):
        super().__init__(name="sum_squared_error", reduction="sum", dtype=dtype)

    def call(self, y_true, y_pred):
        return ops.sum(ops.square(y_pred - y_true), axis=-1)


def load_dense(layer: keras.layers.Layer, kernel: np.ndarray, bias: np.ndarray | None = None):
    """Sets a built ``Dense`` layer's kernel (and bias) to the canonical arrays, as they are.

    A kernel of another shape (an (out, in) one, from a torch-shaped port) is an error that
    names the layer and both shapes, rather than whatever ``set_weights`` says.
    """
    given = [kernel] if bias is None else [kernel, bias]
    held = [tuple(w.shape) for w in layer.weights]
    shapes = [tuple(np.shape(w)) for w in given]
    if shapes != held:
        raise ValueError(
            f"load_dense: layer {layer.name!r} holds weights of shapes {held}, given {shapes}; "
            "canonical kernels are (in, out), as a Dense kernel is, and load untransposed"
        )
    layer.set_weights(given)


def _assign(variable: keras.Variable, value: np.ndarray) -> None:
    variable.assign(np.asarray(value, dtype=keras.backend.standardize_dtype(variable.dtype)))


def load_optimizer(
    optimizer: keras.optimizers.Optimizer,
    named: Mapping[str, keras.Variable],
    canonical: Mapping[str, np.ndarray],
    step: int,
) -> None:
    """The canonical optimizer state (``TrainingState.optimizer``) into a Keras 3 optimizer's
    slot variables, on every Keras backend: Adam's ``m/<p>``, ``v/<p>`` and ``t`` as its
    momentums, velocities and ``iterations`` (the same recurrences: Keras's epsilon-hat form
    changes only the update); SGD's ``momentum/<p>`` (torch's buffer b, b <- momentum * b + g)
    as Keras's velocity m <- momentum * m - lr * g, which is -lr * b for a constant learning
    rate. A slot without canonical state is zeroed: the state before a first step."""
    momentums = getattr(optimizer, "_momentums", None) or getattr(optimizer, "momentums", None)
    velocities = getattr(optimizer, "_velocities", None)
    adam = any(k.startswith(("m/", "v/")) for k in canonical) or velocities is not None
    if canonical and momentums is None:
        raise StateNotLoadable(f"{type(optimizer).__name__} keeps no momentum slots to load")
    # the learning rate variable's value (a schedule's moves: then no constant -lr * b)
    lr = float(optimizer.learning_rate.numpy()) if momentums and not adam else 0.0
    for name, variable in named.items():
        index = optimizer._get_variable_index(variable)
        zeros = np.zeros(tuple(variable.shape))
        if adam:
            _assign(momentums[index], canonical.get(f"m/{name}", zeros))
            _assign(velocities[index], canonical.get(f"v/{name}", zeros))
        elif momentums:
            buffer = canonical.get(f"momentum/{name}")
            _assign(momentums[index], zeros if buffer is None else -lr * buffer)
    optimizer.iterations.assign(int(canonical["t"]) if "t" in canonical else step)


def load_training_state(
    owner: str,
    optimizer: keras.optimizers.Optimizer,
    named: Mapping[str, keras.Variable],
    resume: TrainingState,
) -> None:
    """``load_state`` for variables in the canonical layouts (``named``: canonical name ->
    variable) and their optimizer: the parameters assigned as they are, the optimizer's state by
    ``load_optimizer``. Non-trainable state is refused (``StateNotLoadable``, naming it, and
    ``owner``, the trainer): these variables hold none."""
    if resume.state:
        raise StateNotLoadable(
            f"{owner} maps variables only, not the model's non-trainable "
            f"state ({', '.join(sorted(resume.state))})"
        )
    for name, variable in named.items():
        _assign(variable, resume.params[name])
    load_optimizer(optimizer, named, resume.optimizer, resume.step)


class Trainer:
    """A Keras step: ``value_and_grad`` of ``compute_loss`` with respect to the variables in
    ``named`` (canonical name -> variable, in the case's order), ``apply_gradients``, record.

    ``compute_loss`` is ``loss_fn(y, model(x))`` by default; a subclass with another (a branch,
    a batch) overrides it or ``run_step``. ``optimizer`` is called with no argument, under the
    cell's ``floatx``, to make the Keras optimizer (``functools.partial(keras.optimizers.SGD,
    learning_rate=...)``). A case with data-dependent control flow sets ``self.branch`` (or
    makes it a property) to the branch the step took.
    """

    branch: str | None = None

    def __init__(
        self,
        state: CaseState,
        backend: KerasBackend,
        named: Mapping[str, keras.Variable],
        loss_fn: Callable,
        optimizer: Callable[[], keras.optimizers.Optimizer],
        model: keras.Model | None = None,
    ):
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.model = model
        self.named = dict(named)
        self.variables = list(self.named.values())
        self.loss_fn = loss_fn
        with backend.floatx(state.dtype):  # the learning rate is a variable of floatx()
            self.optimizer = optimizer()
        self.optimizer.build(self.variables)

    def load_state(self, resume: TrainingState) -> None:
        """The reference's training state into the running model's variables (``named``:
        canonical layouts are Keras's) and its optimizer's slots, in place."""
        load_training_state(type(self).__name__, self.optimizer, self.named, resume)

    def compute_loss(self) -> Any:
        return self.loss_fn(self.y, self.model(self.x))

    def run_step(self) -> None:
        self.last = None  # the last step's gradients are not held through this one
        loss, grads = self.backend.value_and_grad(self.compute_loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        self.last = (loss, grads)

    def record(self) -> StepRecord:
        loss, grads = self.last
        return step_record(self.backend.to_numpy, loss, grads, self.named, self.branch)
