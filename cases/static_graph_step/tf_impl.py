"""static_graph_step in TensorFlow: the whole step, branch included, as one graph.

The branch is ``tf.cond`` on the previous loss, which lives in a ``tf.Variable`` (a Python float
argument would retrace ``tf.function`` on every new value); forward, ``tf.cond``, gradients,
the update and storing the new loss are all inside the step. In ``tf.function`` and XLA the
cond is a graph op (If) traced once; ``tf.eager`` runs the same step op by op as the control,
where ``tf.cond`` just calls the branch taken. In v1graph the same ops are built in a TF1 graph
with placeholders and ``tf.gradients``. Gradients of the w2 the cond did not take are zeros
(``UnconnectedGradients.ZERO`` where the tape or ``tf.gradients`` sees no path).
"""

import tensorflow as tf

from equiv.records import StepRecord

ZERO = tf.UnconnectedGradients.ZERO


def forward_loss(x, y, w1, w2a, w2b, use_a):
    h = tf.nn.relu(tf.matmul(x, w1))
    y_pred = tf.cond(use_a, lambda: tf.matmul(h, w2a), lambda: tf.matmul(h, w2b))
    return tf.reduce_sum((y_pred - y) ** 2)


def make_train_step(lr, threshold):
    def train_step(x, y, w1, w2a, w2b, prev_loss):
        use_a = prev_loss < threshold
        with tf.GradientTape() as tape:
            loss = forward_loss(x, y, w1, w2a, w2b, use_a)
        grads = tape.gradient(loss, [w1, w2a, w2b], unconnected_gradients=ZERO)
        for w, g in zip((w1, w2a, w2b), grads, strict=True):
            w.assign_sub(lr * g)
        prev_loss.assign(loss)
        return loss, grads, use_a

    return train_step


class Trainer:
    def __init__(self, state, backend):
        self.backend = backend
        cfg = state.config
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.w = {n: tf.Variable(state.params[n], name=n) for n in ("w1", "w2a", "w2b")}
        self.prev_loss = tf.Variable(cfg["initial_prev_loss"], dtype=state.dtype, name="prev")
        self.step = backend.transform(make_train_step(cfg["lr"], cfg["threshold"]))

    def run_step(self):
        self.last = self.step(self.x, self.y, *self.w.values(), self.prev_loss)

    def record(self):
        to_np = self.backend.to_numpy
        loss, grads, use_a = self.last
        return StepRecord(
            loss=to_np(loss)[()],
            grads={n: to_np(g) for n, g in zip(self.w, grads, strict=True)},
            params={n: to_np(p) for n, p in self.w.items()},
            branch="w2a" if bool(use_a) else "w2b",
        )


class GraphTrainer:
    """TF 1.0: the step, tf.cond included, is one graph; every step is one Session.run."""

    def __init__(self, state, backend):
        self.backend = backend
        cfg = state.config
        graph = backend.new_graph()
        dtype = tf.as_dtype(state.dtype)
        with graph.as_default():
            self.x = tf.compat.v1.placeholder(dtype, shape=state.data["x"].shape, name="x")
            self.y = tf.compat.v1.placeholder(dtype, shape=state.data["y"].shape, name="y")
            self.w = {n: tf.Variable(state.params[n], name=n) for n in ("w1", "w2a", "w2b")}
            prev_loss = tf.Variable(cfg["initial_prev_loss"], dtype=dtype, name="prev_loss")
            use_a = prev_loss < tf.constant(cfg["threshold"], dtype=dtype)
            weights = list(self.w.values())
            loss = forward_loss(self.x, self.y, *weights, use_a)
            grads = tf.gradients(loss, weights, unconnected_gradients=ZERO)
            lr = tf.constant(cfg["lr"], dtype=dtype)
            with tf.control_dependencies([loss, use_a, *grads]):
                updates = [w.assign_sub(lr * g) for w, g in zip(weights, grads, strict=True)]
                update = tf.group(*updates, prev_loss.assign(loss))
            init = tf.compat.v1.global_variables_initializer()
        graph.finalize()
        self.sess = backend.session(graph)
        self.sess.run(init)
        self.fetches = (loss, grads, use_a, update)
        feed = {self.x: state.data["x"], self.y: state.data["y"]}
        self.feed = {k: backend.to_native(v) for k, v in feed.items()}

    def run_step(self):
        self.last = self.sess.run(self.fetches, feed_dict=self.feed)

    def record(self):
        loss, grads, use_a, _ = self.last
        return StepRecord(
            loss=loss[()],
            grads=dict(zip(self.w, grads, strict=True)),
            params=self.sess.run(self.w),
            branch="w2a" if use_a else "w2b",
        )


def build(state, backend):
    return GraphTrainer(state, backend) if backend.mode == "v1graph" else Trainer(state, backend)
