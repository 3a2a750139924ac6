"""keras_sequential in plain TensorFlow: the Keras model's maths written by hand.

relu(x @ w1 + b1) @ w2 + b2 with ``tf.Variable`` kernels in the canonical (in, out) layout, as a
Keras ``Dense`` holds them; the loss is the mean of squared errors over every element, as
``keras.losses.MeanSquaredError``; the optimizer is written out as variables and update ops:
SGD, or Adam as the paper's Algorithm 1 (``torch.optim.Adam``'s form, not Keras's epsilon-hat
form) when the case config asks for it. Everything else is two_layer_mlp's TF code: the
mode-transformed step on TF 2.0, a placeholder graph with ``tf.gradients`` on TF 1.0.
"""

import tensorflow as tf

from equiv.records import StepRecord

NAMES = ("w1", "b1", "w2", "b2")


def forward_loss(x, y, w1, b1, w2, b2):
    h = tf.nn.relu(tf.matmul(x, w1) + b1)
    y_pred = tf.matmul(h, w2) + b2
    return tf.reduce_mean(tf.square(y_pred - y))


class SGD:
    def __init__(self, params, cfg, dtype):
        self.lr = tf.constant(cfg["lr"], dtype=dtype)

    def updates(self, params, grads):
        return [p.assign_sub(self.lr * g) for p, g in zip(params, grads, strict=True)]


class Adam:
    """p -= lr * m_hat / (sqrt(v_hat) + eps), with bias-corrected m_hat and v_hat."""

    def __init__(self, params, cfg, dtype):
        def const(value):
            return tf.constant(value, dtype=dtype)

        self.lr, self.eps = const(cfg["lr"]), const(cfg.get("epsilon", 1e-8))
        self.b1, self.b2 = const(cfg.get("beta_1", 0.9)), const(cfg.get("beta_2", 0.999))
        self.t = tf.Variable(const(0.0), name="t")
        self.m = [tf.Variable(tf.zeros(p.shape, dtype=dtype)) for p in params]
        self.v = [tf.Variable(tf.zeros(p.shape, dtype=dtype)) for p in params]

    def updates(self, params, grads):
        t = self.t.assign_add(1.0)
        out = []
        for p, g, m, v in zip(params, grads, self.m, self.v, strict=True):
            m_t = m.assign(self.b1 * m + (1 - self.b1) * g)
            v_t = v.assign(self.b2 * v + (1 - self.b2) * g * g)
            m_hat = m_t / (1 - self.b1**t)
            v_hat = v_t / (1 - self.b2**t)
            out.append(p.assign_sub(self.lr * m_hat / (tf.sqrt(v_hat) + self.eps)))
        return out


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def make_train_step(optimizer):
    def train_step(x, y, params):
        with tf.GradientTape() as tape:
            loss = forward_loss(x, y, *params)
        grads = tape.gradient(loss, params)
        optimizer.updates(params, grads)
        return loss, grads

    return train_step


class Trainer:
    def __init__(self, state, backend):
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.params = [tf.Variable(state.params[n], name=n) for n in NAMES]
        optimizer = OPTIMIZERS[state.config["optimizer"]](self.params, state.config, state.dtype)
        self.step = backend.transform(make_train_step(optimizer))

    def run_step(self):
        self.last = self.step(self.x, self.y, self.params)

    def record(self):
        to_np = self.backend.to_numpy
        loss, grads = self.last
        return StepRecord(
            loss=to_np(loss)[()],
            grads={n: to_np(g) for n, g in zip(NAMES, grads, strict=True)},
            params={n: to_np(p) for n, p in zip(NAMES, self.params, strict=True)},
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
            self.params = [tf.Variable(state.params[n], name=n) for n in NAMES]
            optimizer = OPTIMIZERS[state.config["optimizer"]](self.params, state.config, dtype)
            loss = forward_loss(self.x, self.y, *self.params)
            grads = tf.gradients(loss, self.params)
            with tf.control_dependencies([loss, *grads]):
                update = tf.group(*optimizer.updates(self.params, grads))
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
        loss, grads, _ = self.last
        params = self.sess.run(self.params)
        return StepRecord(
            loss=loss[()],
            grads=dict(zip(NAMES, grads, strict=True)),
            params=dict(zip(NAMES, params, strict=True)),
        )


def build(state, backend):
    return GraphTrainer(state, backend) if backend.mode == "v1graph" else Trainer(state, backend)
