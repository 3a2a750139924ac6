"""keras_sequential in plain TensorFlow: the Keras model's maths written by hand.

relu(x @ w1 + b1) @ w2 + b2 with ``tf.Variable`` kernels in the canonical (in, out) layout, as a
Keras ``Dense`` holds them; the loss is the mean of squared errors over every element, as
``keras.losses.MeanSquaredError``; the optimizer is written out as variables and update ops:
two_layer_mlp's SGD, or Adam as the paper's Algorithm 1 (``torch.optim.Adam``'s form, not
Keras's epsilon-hat form) when the case config asks for it. The mode-transformed step on TF 2.0,
a placeholder graph with ``tf.gradients`` on TF 1.0 (``equiv.support.tf``).
"""

import functools

import tensorflow as tf

from cases.two_layer_mlp.tf_impl import SGD
from equiv.support.tf import GraphTrainer, Trainer, refuse_unknown, zeros_like


def forward_loss(x, y, w1, b1, w2, b2):
    h = tf.nn.relu(tf.matmul(x, w1) + b1)
    y_pred = tf.matmul(h, w2) + b2
    return tf.reduce_mean(tf.square(y_pred - y))


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

    def slot_values(self, canonical, names):
        """The canonical ``m/<p>``, ``v/<p>`` and ``t`` are these moments and step count (the
        same recurrences); absent, they are a first step's zeros."""
        refuse_unknown(self, canonical, ("m", "v", "t"))
        values = [(self.t, canonical.get("t", 0))]
        for name, m, v in zip(names, self.m, self.v, strict=True):
            values.append((m, canonical.get(f"m/{name}", zeros_like(m))))
            values.append((v, canonical.get(f"v/{name}", zeros_like(v))))
        return values


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def make_train_step(optimizer, forward_loss=forward_loss):
    def train_step(x, y, *params):
        with tf.GradientTape() as tape:
            loss = forward_loss(x, y, *params)
        grads = tape.gradient(loss, params)
        optimizer.updates(params, grads)
        return loss, grads

    return train_step


def build(state, backend, forward_loss=forward_loss):
    """``forward_loss(x, y, *params)``: this model's, or another's trained the same way."""
    optimizer = OPTIMIZERS[state.config["optimizer"]]
    if backend.mode == "v1graph":
        return GraphTrainer(state, backend, forward_loss, optimizer)
    train_step = functools.partial(make_train_step, forward_loss=forward_loss)
    return Trainer(state, backend, train_step, optimizer)
