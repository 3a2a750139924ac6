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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import tensorflow as tf

from equiv.contract.records import CaseState, StepRecord
from equiv.support.records import step_record

if TYPE_CHECKING:
    from equiv.backends.tensorflow import TFBackend, TFV1Graph


class Optimizer(Protocol):
    def updates(self, weights: Sequence[tf.Variable], grads: Sequence[Any]) -> list:
        """The ops (or, eagerly, the effects) that update ``weights`` from ``grads``."""


#: ``optimizer(weights, cfg, dtype)``: built once per trainer with its variables, inside the
#: trainer's graph for TF 1.0 (the optimizer's own variables, Adam's moments say, belong there)
OptimizerFactory = Callable[[Sequence[Any], Mapping[str, Any], Any], Optimizer]


def variables(params: Mapping[str, np.ndarray]) -> dict[str, tf.Variable]:
    """A ``tf.Variable`` per canonical parameter, named after it, in the case's order."""
    return {name: tf.Variable(value, name=name) for name, value in params.items()}


class Trainer:
    """TF 2.0: the variables ``self.weights``, the data, and the case's step, transformed by the
    backend's mode (eager, ``tf.function``, XLA).

    ``make_train_step(optimizer)`` returns the step, ``train_step(x, y, *weights) -> (loss,
    grads)`` with ``grads`` in the order of the weights (or by name); ``optimizer`` is an
    ``OptimizerFactory``, called once with the variables. The step takes tensors and variables
    only, so a compiled mode traces it once. A case with data-dependent control flow sets
    ``self.branch`` (or makes it a property) to the branch the step took.
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
        self.step = backend.transform(
            make_train_step(optimizer(weights, state.config, state.dtype))
        )

    def run_step(self) -> None:
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


class GraphTrainer:
    """TF 1.0: define the graph once, then run it many times.

    ``forward_loss(x, y, *weights)`` builds the loss on the data tensors and the variables (in
    the case's order); ``optimizer`` is an ``OptimizerFactory``. Subclasses change what the
    graph holds: ``inputs`` (placeholders fed the data, by default), ``train_ops`` (one
    ``train_op``, by default; the case's config is ``self.config``). ``self.fetches`` is what
    ``Session.run`` runs each step and ``self.last`` what it fetched, ``(loss, grads, update)``
    for ``record``; ``self.branch`` is the branch taken, as in ``Trainer``.
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
            self.weights = variables(state.params)
            weights = list(self.weights.values())
            self.fetches = self.train_ops(x, y, optimizer(weights, state.config, dtype))
            init = tf.compat.v1.global_variables_initializer()
        graph.finalize()  # nothing is added to the graph once it runs
        self.sess = backend.session(graph)
        self.sess.run(init)
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

    def run_step(self) -> None:
        self.last = self.sess.run(self.fetches, feed_dict=self.feed)

    def record(self) -> StepRecord:
        loss, grads, _ = self.last
        params = self.sess.run(self.weights)
        return step_record(self.backend.to_numpy, loss, grads, params, self.branch)
