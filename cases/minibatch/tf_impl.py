"""minibatch in plain TensorFlow: TwoLayerNet's maths by hand, batches from ``tf.data``.

The model, loss, SGD and step are keras_sequential's TF code, imported: relu(x @ w1 + b1) @ w2 +
b2 with canonical (in, out) ``tf.Variable`` kernels, ``reduce_mean`` of the squared errors (the
mean over the batch's own elements), SGD as update ops. The data pipeline is TensorFlow's own,
``tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).repeat()``: in order (no
shuffle), the partial last batch kept (``drop_remainder=False``, the default), epochs without
end.

TF 2.0 (eager, tf.function, XLA): the dataset is iterated in Python and each batch is passed
to keras_sequential's mode-transformed step. Its tensor arguments' shapes are the trace key, so
tf.function and XLA trace once per batch shape: once for ``minibatch``, twice for
``minibatch_partial`` (its batch of 4), never again in later epochs.

TF 1.0 (v1graph): the dataset is part of the graph, as TF1 programs fed their input
pipelines: ``tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()`` gives the (x, y)
tensors the loss is built on (batch dimension unknown, so the partial batch needs nothing
more); ``tf.gradients``, the update ops, and one ``Session.run`` per step, which pulls the next
batch.

``load_state`` (the support bases') loads the parameters and the optimizer's slots only: the
iterator stays where the port's own steps left it, so a pipeline that is off still shows.
"""

import tensorflow as tf

from cases.keras_sequential.tf_impl import OPTIMIZERS, forward_loss, make_train_step
from equiv.support import tf as support


def make_dataset(state):
    data, cfg = state.data, state.config
    dataset = tf.data.Dataset.from_tensor_slices((data["x"], data["y"]))
    return dataset.batch(cfg["batch_size"]).repeat()  # no shuffle; partial last batch kept


class Trainer(support.Trainer):
    """keras_sequential's TF 2.0 step on the dataset's next batch instead of all of the data."""

    def __init__(self, state, backend, *args):
        super().__init__(state, backend, *args)
        self.batches = iter(make_dataset(state))

    def run_step(self):
        x_batch, y_batch = next(self.batches)
        self.last = self.step(x_batch, y_batch, *self.weights.values())


class GraphTrainer(support.GraphTrainer):
    """TF 1.0: the input pipeline, model, gradients and updates in one graph, run per step."""

    def inputs(self, state, dtype):
        # A one-shot iterator takes the graph's random seed for whatever random ops its
        # dataset holds (this one holds none); with op determinism on, an unset seed raises.
        tf.compat.v1.set_random_seed(0)
        iterator = tf.compat.v1.data.make_one_shot_iterator(make_dataset(state))
        x_batch, y_batch = iterator.get_next()
        return x_batch, y_batch, {}  # nothing to feed: each Session.run pulls the next batch


def build(state, backend):
    optimizer = OPTIMIZERS[state.config["optimizer"]]
    if backend.mode == "v1graph":
        return GraphTrainer(state, backend, forward_loss, optimizer)
    return Trainer(state, backend, make_train_step, optimizer)
