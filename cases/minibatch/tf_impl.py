"""minibatch in plain TensorFlow: TwoLayerNet's maths by hand, batches from ``tf.data``.

The model, loss and SGD are keras_sequential's TF code, imported: relu(x @ w1 + b1) @ w2 + b2
with canonical (in, out) ``tf.Variable`` kernels, ``reduce_mean`` of the squared errors (the
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
"""

import tensorflow as tf

from cases.keras_sequential import tf_impl as keras_sequential
from cases.keras_sequential.tf_impl import NAMES, OPTIMIZERS, forward_loss


def make_dataset(state):
    data, cfg = state.data, state.config
    dataset = tf.data.Dataset.from_tensor_slices((data["x"], data["y"]))
    return dataset.batch(cfg["batch_size"]).repeat()  # no shuffle; partial last batch kept


class Trainer(keras_sequential.Trainer):
    """keras_sequential's TF 2.0 trainer (variables, optimizer, transformed step, ``record``),
    stepping on the dataset's next batch instead of all of the data."""

    def __init__(self, state, backend):
        super().__init__(state, backend)
        self.batches = iter(make_dataset(state))

    def run_step(self):
        x_batch, y_batch = next(self.batches)
        self.last = self.step(x_batch, y_batch, self.params)


class GraphTrainer:
    """TF 1.0: the input pipeline, model, gradients and updates in one graph, run per step."""

    def __init__(self, state, backend):
        self.backend = backend
        graph = backend.new_graph()
        dtype = tf.as_dtype(state.dtype)
        with graph.as_default():
            # A one-shot iterator takes the graph's random seed for whatever random ops its
            # dataset holds (this one holds none); with op determinism on, an unset seed raises.
            tf.compat.v1.set_random_seed(0)
            iterator = tf.compat.v1.data.make_one_shot_iterator(make_dataset(state))
            x_batch, y_batch = iterator.get_next()
            self.params = [tf.Variable(state.params[n], name=n) for n in NAMES]
            optimizer = OPTIMIZERS[state.config["optimizer"]](self.params, state.config, dtype)
            loss = forward_loss(x_batch, y_batch, *self.params)
            grads = tf.gradients(loss, self.params)
            with tf.control_dependencies([loss, *grads]):
                update = tf.group(*optimizer.updates(self.params, grads))
            init = tf.compat.v1.global_variables_initializer()
        graph.finalize()
        self.sess = backend.session(graph)
        self.sess.run(init)
        self.fetches = (loss, grads, update)

    def run_step(self):
        self.last = self.sess.run(self.fetches)

    record = keras_sequential.GraphTrainer.record  # (loss, grads, update) fetched per step


def build(state, backend):
    return GraphTrainer(state, backend) if backend.mode == "v1graph" else Trainer(state, backend)
