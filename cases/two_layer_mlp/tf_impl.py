"""two_layer_mlp in TensorFlow: the seed's TF 2.0 program, and its TF 1.0 program in v1graph.

TF 2.0 (eager, ``tf.function``, XLA): ``tf.Variable`` weights, the forward pass under a
``tf.GradientTape``, ``tape.gradient``, ``assign_sub``; the whole step is the function the mode
transforms, called with tensors and variables only, so it is traced once.
TF 1.0 (v1graph): placeholders for x and y, ``tf.gradients``, the update as ``assign_sub`` ops in
the graph, one ``Session.run`` per step with a ``feed_dict``.

The loss is the case's sum of squared errors, not the seed's TF
``reduce_mean(reduce_sum(diff**2, axis=1))``. The hidden layer is ``tf.nn.relu``: the seed's
``tf.maximum(h, 0)`` sends the gradient through at h == 0 exactly, the reference does not.
"""

import tensorflow as tf

from equiv.records import StepRecord


def forward_loss(x, y, w1, w2):
    y_pred = tf.matmul(tf.nn.relu(tf.matmul(x, w1)), w2)
    return tf.reduce_sum((y_pred - y) ** 2)


def make_train_step(lr):
    def train_step(x, y, w1, w2):
        with tf.GradientTape() as tape:
            loss = forward_loss(x, y, w1, w2)
        grad_w1, grad_w2 = tape.gradient(loss, [w1, w2])
        w1.assign_sub(lr * grad_w1)
        w2.assign_sub(lr * grad_w2)
        return loss, grad_w1, grad_w2

    return train_step


class Trainer:
    def __init__(self, state, backend):
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.w1 = tf.Variable(state.params["w1"], name="w1")
        self.w2 = tf.Variable(state.params["w2"], name="w2")
        self.step = backend.transform(make_train_step(state.config["lr"]))

    def run_step(self):
        self.last = self.step(self.x, self.y, self.w1, self.w2)

    def record(self):
        to_np = self.backend.to_numpy
        loss, g1, g2 = self.last
        return StepRecord(
            loss=to_np(loss)[()],
            grads={"w1": to_np(g1), "w2": to_np(g2)},
            params={"w1": to_np(self.w1), "w2": to_np(self.w2)},
        )


class GraphTrainer:
    """TF 1.0: define the graph once, then run it many times."""

    def __init__(self, state, backend):
        self.backend = backend
        graph = backend.new_graph()
        dtype = tf.as_dtype(state.dtype)
        with graph.as_default():
            self.x = tf.compat.v1.placeholder(dtype, shape=state.data["x"].shape, name="x")
            self.y = tf.compat.v1.placeholder(dtype, shape=state.data["y"].shape, name="y")
            self.weights = [tf.Variable(state.params[n], name=n) for n in ("w1", "w2")]
            loss = forward_loss(self.x, self.y, *self.weights)
            grads = tf.gradients(loss, self.weights)
            lr = tf.constant(state.config["lr"], dtype=dtype)
            with tf.control_dependencies([loss, *grads]):
                update = tf.group(
                    *[w.assign_sub(lr * g) for w, g in zip(self.weights, grads, strict=True)]
                )
            init = tf.compat.v1.global_variables_initializer()
        graph.finalize()
        self.sess = backend.session(graph)
        self.sess.run(init)
        self.fetches = (loss, grads, update)
        feed = {self.x: state.data["x"], self.y: state.data["y"]}
        self.feed = {k: backend.to_native(v) for k, v in feed.items()}

    def run_step(self):
        self.last = self.sess.run(self.fetches, feed_dict=self.feed)

    def record(self):
        loss, (g1, g2), _ = self.last
        w1, w2 = self.sess.run(self.weights)
        return StepRecord(loss=loss[()], grads={"w1": g1, "w2": g2}, params={"w1": w1, "w2": w2})


def build(state, backend):
    return GraphTrainer(state, backend) if backend.mode == "v1graph" else Trainer(state, backend)
