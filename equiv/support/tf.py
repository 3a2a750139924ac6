"""Support for TensorFlow case code: TF 2 variables and the TF 1 ``Session`` plumbing.

A TF case file shows its model (the function that builds the loss), its optimizer's update
ops, its TF 2 training step (``tf.GradientTape``, ``tape.gradient``) and ``build``. What every
TF trainer does besides is here:

- ``Trainer`` (TF 2.0: eager, ``tf.function``, XLA): the canonical parameters as
  ``tf.Variable``s, the case's step transformed by the backend's mode, and the record;
- ``GraphTrainer`` (TF 1.0, backend ``tf.v1graph``): a fresh graph with placeholders for the
  data, the variables, ``tf.gradients`` of the case's loss, the case's update ops run after the
  loss and gradients (control dependencies), the initializer, ``finalize``, a ``Session`` and
  one ``Session.run`` per step.

Both take an optimizer as a factory ``optimizer(weights, cfg, dtype)`` whose ``updates(weights,
grads)`` returns the update ops (``Optimizer``): the same object serves an eager step, a traced
one and a TF1 graph. This module imports tensorflow: only TF case code imports it.

Both load the reference's training state in place (``load_state``, ``Loading``): the
parameters, the optimizer's slots (``slot_values``), the model's non-trainable state and the
previous loss go into the variables the port already has, so a traced step keeps its trace and
a TF1 graph stays the one that was finalized.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import tensorflow as tf

from equiv.contract.records import CaseState, StepRecord, TrainingState
from equiv.contract.trainer import StateNotLoadable
from equiv.layouts.transposition import contiguous
from equiv.support.records import step_record

if TYPE_CHECKING:
    from equiv.backends.tensorflow import TFBackend, TFV1Graph


class Optimizer(Protocol):
    """An optimizer with slots (momentum buffers, Adam's moments) may also define
    ``slot_values(canonical, names) -> [(variable, value), ...]``: the value each of its
    variables takes at the canonical state ``TrainingState.optimizer``, whose per-parameter
    arrays come in the port's layout, for the weights named ``names`` (in the order
    ``updates`` gets them). It returns values rather than assigning them because an eager
    ``assign`` and a TF1 ``Session`` write them differently (``Loading.assign``)."""

    def updates(self, weights: Sequence[tf.Variable], grads: Sequence[Any]) -> list:
        """The ops (or, eagerly, the effects) that update ``weights`` from ``grads``."""


#: what ``slot_values`` returns: each optimizer variable and the value it takes
SlotValues = list[tuple[tf.Variable, Any]]


def refuse_unknown(optimizer: Any, canonical: Mapping[str, Any], known: Sequence[str]) -> None:
    """``StateNotLoadable`` for canonical optimizer state that ``optimizer`` has no slot for
    (``known``: the slot kinds, ``momentum`` for ``momentum/<p>``, and the scalars, ``t``):
    silently dropped, an Adam state loaded into an SGD port would look loaded."""
    unknown = sorted(k for k in canonical if k.split("/", 1)[0] not in known)
    if unknown:
        raise StateNotLoadable(
            f"{type(optimizer).__name__} keeps no slot for the optimizer state "
            f"{', '.join(unknown[:5])}"
        )


def zeros_like(variable: tf.Variable) -> np.ndarray:
    """A slot's value before the first step (a canonical key that is absent)."""
    return np.zeros(tuple(variable.shape), dtype=variable.dtype.as_numpy_dtype)


#: ``optimizer(weights, cfg, dtype)``: built once per trainer with its variables, inside the
#: trainer's graph for TF 1.0 (the optimizer's own variables, Adam's moments say, belong there)
OptimizerFactory = Callable[[Sequence[Any], Mapping[str, Any], Any], Optimizer]


def variables(params: Mapping[str, np.ndarray]) -> dict[str, tf.Variable]:
    """A ``tf.Variable`` per canonical parameter, named after it, in the case's order."""
    return {name: tf.Variable(value, name=name) for name, value in params.items()}


def graph_variables(params: Mapping[str, np.ndarray]) -> tuple[dict[str, tf.Variable], dict]:
    """``variables`` for a TF1 graph, and the feed that initializes them. ``tf.Variable(value)``
    in a graph keeps ``value`` in the graph as a constant, and a ``Session`` copies constants
    into every executor it builds (one per distinct ``Session.run`` signature): a float64
    resnet18 port grew by 1.2 GB on building and by another 1 GB on its first
    ``load_state``, against 0.3 GB and nothing in eager mode. A placeholder as the initial
    value keeps the graph small; the value is fed once, to the initializer."""
    weights, feed = {}, {}
    for name, value in params.items():
        value = np.asarray(value)
        initial = tf.compat.v1.placeholder(value.dtype, shape=value.shape)
        weights[name] = tf.Variable(initial, name=name)
        feed[initial] = contiguous(value)
    return weights, feed


def _slot_variables(optimizer: Any) -> list[str]:
    """The attributes of ``optimizer`` that hold variables (its slots): an optimizer with
    slots and no ``slot_values`` cannot be loaded, even to the empty state of a first step."""
    held = []
    for attr, value in vars(optimizer).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, tf.Variable) for v in values):
            held.append(attr)
    return held


class Loading:
    """``load_state`` for both trainers: the reference's ``TrainingState`` into the port's
    variables (``self.weights``; ``model_state()``; ``self.optimizer``'s ``slot_values``)
    and, for a step that reads it, the previous loss (``load_prev_loss``), in place.

    Subclass hooks: ``port_layout(name, value)`` puts a canonical parameter (and its optimizer
    slots) into the layout the variables hold (channels-last, for resnet18); ``model_state()``
    is the non-trainable state's variables by canonical name; ``load_prev_loss(value)`` for a
    port whose branch reads the previous loss. A data pipeline's position is never loaded: it
    is the port's own, so that a pipeline that is off stays seen."""

    weights: dict[str, Any]
    optimizer: Any

    def port_layout(self, name: str, value: np.ndarray) -> np.ndarray:
        """A canonical parameter (or a slot of it) in the variables' layout: the same here."""
        return value

    def model_state(self) -> Mapping[str, Any]:
        """The model's non-trainable state as variables by canonical name: none here."""
        return {}

    def load_prev_loss(self, value: float) -> None:
        """The previous loss, for a step whose branch reads it: this one reads none."""

    def assign(self, values: SlotValues) -> None:
        """Write each value into its variable (cast to its dtype)."""
        raise NotImplementedError

    def load_state(self, resume: TrainingState) -> None:
        """The reference's training state into the running port: no rebuild, so a compiled
        step keeps its trace, a TF1 graph stays finalized, and what the state does not hold
        (a data pipeline's position) stays the port's own."""
        values: SlotValues = []
        for group, given, held in (
            ("parameter", resume.params, self.weights),
            ("non-trainable state", resume.state, self.model_state()),
        ):
            unknown = sorted(set(given) - set(held))
            if unknown:
                raise StateNotLoadable(
                    f"{type(self).__name__} holds no {group} named {', '.join(unknown[:5])}"
                )
        for name, value in resume.params.items():
            values.append((self.weights[name], self.port_layout(name, value)))
        held = self.model_state()
        values += [(held[name], value) for name, value in resume.state.items()]
        values += self.optimizer_values(resume.optimizer)
        self.assign(values)
        if resume.prev_loss is not None:
            self.load_prev_loss(resume.prev_loss)

    def optimizer_values(self, canonical: Mapping[str, np.ndarray]) -> SlotValues:
        """The optimizer's ``slot_values`` for the canonical state, its per-parameter arrays
        put in the port's layout first; an optimizer without slots has nothing to load."""
        slot_values = getattr(self.optimizer, "slot_values", None)
        if slot_values is None:
            slots = _slot_variables(self.optimizer)
            if canonical or slots:
                held = f"keeps slots ({', '.join(slots)})" if slots else "keeps no slots"
                raise StateNotLoadable(
                    f"{type(self.optimizer).__name__} {held} and defines no slot_values to "
                    f"load the optimizer state ({', '.join(sorted(canonical)[:5]) or 'empty'})"
                )
            return []
        native = {
            key: self.port_layout(key.split("/", 1)[1], value) if "/" in key else value
            for key, value in canonical.items()
        }
        return slot_values(native, list(self.weights))


def _as_value(variable: Any, value: Any) -> np.ndarray:
    # contiguous: TF copies a strided view (a kernel put channels-last) element by element
    return contiguous(np.asarray(value, dtype=variable.dtype.as_numpy_dtype))


class Trainer(Loading):
    """TF 2.0: the variables ``self.weights``, the data, and the case's step, transformed by the
    backend's mode (eager, ``tf.function``, XLA).

    ``make_train_step(optimizer)`` returns the step, ``train_step(x, y, *weights) -> (loss,
    grads)`` with ``grads`` in the order of the weights (or by name); ``optimizer`` is an
    ``OptimizerFactory``, called once with the variables (kept as ``self.optimizer``, for
    ``load_state``). The step takes tensors and variables only, so a compiled mode traces it
    once. A case with data-dependent control flow sets ``self.branch`` (or makes it a
    property) to the branch the step took.
    """

    branch: str | None = None

    def __init__(
        self,
        state: CaseState,
        backend: TFBackend,
        make_train_step: Callable[[Optimizer], Callable],
        optimizer: OptimizerFactory,
    ):
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.weights = variables(state.params)
        weights = list(self.weights.values())
        self.optimizer = optimizer(weights, state.config, state.dtype)
        self.step = backend.transform(make_train_step(self.optimizer))

    def assign(self, values: SlotValues) -> None:
        """Eagerly, outside the step: a traced step reads the variables it is given, so new
        values in them need no retrace."""
        for variable, value in values:
            variable.assign(_as_value(variable, value))

    def run_step(self) -> None:
        self.last = None  # the last step's gradients are not held through this one
        self.last = self.step(self.x, self.y, *self.weights.values())

    def record(self) -> StepRecord:
        loss, grads = self.last
        return step_record(self.backend.to_numpy, loss, grads, self.weights, self.branch)


def train_op(loss: tf.Tensor, weights: Sequence[tf.Variable], updates: Callable) -> tuple:
    """``(loss, grads, update)`` for a TF1 graph: ``tf.gradients`` of ``loss``, and the
    ``updates(weights, grads)`` ops grouped into one op that runs only after the loss and the
    gradients are computed, so that one ``Session.run`` of all three fetches the loss and the
    gradients of the parameters before their update."""
    grads = tf.gradients(loss, weights)
    with tf.control_dependencies([loss, *grads]):
        update = tf.group(*updates(weights, grads))
    return loss, grads, update


class GraphTrainer(Loading):
    """TF 1.0: define the graph once, then run it many times.

    ``forward_loss(x, y, *weights)`` builds the loss on the data tensors and the variables (in
    the case's order); ``optimizer`` is an ``OptimizerFactory`` (``self.optimizer``).
    Subclasses change what the graph holds: ``inputs`` (placeholders fed the data, by
    default), ``train_ops`` (one ``train_op``, by default; the case's config is
    ``self.config``). ``self.fetches`` is what ``Session.run`` runs each step and ``self.last``
    what it fetched, ``(loss, grads, update)`` for ``record``; ``self.branch`` is the branch
    taken, as in ``Trainer``.
    """

    branch: str | None = None

    def __init__(
        self,
        state: CaseState,
        backend: TFV1Graph,
        forward_loss: Callable,
        optimizer: OptimizerFactory,
    ):
        self.backend = backend
        self.forward_loss = forward_loss
        self.config = state.config
        graph = backend.new_graph()
        dtype = tf.as_dtype(state.dtype)
        with graph.as_default():
            x, y, feed = self.inputs(state, dtype)
            self.weights, initial = graph_variables(state.params)
            weights = list(self.weights.values())
            self.optimizer = optimizer(weights, state.config, dtype)
            self.fetches = self.train_ops(x, y, self.optimizer)
            init = tf.compat.v1.global_variables_initializer()
        graph.finalize()  # nothing is added to the graph once it runs
        self.sess = backend.session(graph)
        self.sess.run(init, feed_dict=initial)
        self.feed = {tensor: backend.to_native(value) for tensor, value in feed.items()}

    def inputs(self, state: CaseState, dtype: tf.DType) -> tuple[Any, Any, dict]:
        """The x and y tensors the loss is built on, and the feed: placeholders, fed the data
        at every ``Session.run``."""
        x = tf.compat.v1.placeholder(dtype, shape=state.data["x"].shape, name="x")
        y = tf.compat.v1.placeholder(dtype, shape=state.data["y"].shape, name="y")
        return x, y, {x: state.data["x"], y: state.data["y"]}

    def train_ops(self, x: Any, y: Any, optimizer: Optimizer) -> Any:
        """What each step runs: the loss, its gradients and the update (``train_op``)."""
        weights = list(self.weights.values())
        return train_op(self.forward_loss(x, y, *weights), weights, optimizer.updates)

    def assign(self, values: SlotValues) -> None:
        """What ``tf.compat.v1.Variable.load`` does, for all the variables in one
        ``Session.run``: each variable's initializer, its initial value fed the new one. No
        op is added to the finalized graph, and none is built before ``finalize`` for a load
        that most runs never make (a placeholder and an assign op per variable, 164 for
        resnet18): the graph the port runs is the one it would run without ``load_state``.
        Not ``Variable.load`` itself: outside ``graph.as_default()`` TF 2 executes eagerly,
        and there it calls ``assign``, which would add an op to the finalized graph."""
        if not values:
            return
        initializers = [variable.initializer for variable, _ in values]
        feed = {
            variable.initializer.inputs[1]: _as_value(variable, value) for variable, value in values
        }
        self.sess.run(initializers, feed_dict=feed)

    def run_step(self) -> None:
        self.last = None  # the last step's gradients are not held through this one
        self.last = self.sess.run(self.fetches, feed_dict=self.feed)

    def record(self) -> StepRecord:
        loss, grads, _ = self.last
        params = self.sess.run(self.weights)
        return step_record(self.backend.to_numpy, loss, grads, params, self.branch)
