"""static_graph_step in Keras 3: the branch as ``keras.ops.cond`` on a loss kept in a variable.

The previous loss lives in a non-trainable ``keras.Variable`` and the head is chosen by
``ops.cond(prev_loss < threshold, ...)`` inside the loss function, so the decision is data in
the computation rather than a Python ``if`` (``tf.cond`` on TensorFlow, ``lax.cond`` on jax; on
torch Keras's cond is a plain ``if`` on the tensor, torch having no eager graph to put it in).
The step runs eagerly on all three backends: Keras cells are not compiled modes here. Gradients
of the head not taken are zeros; SGD on zero leaves it as it is. Otherwise dynamic_branching's
Keras code.

The loss is a method that reads nothing but the layers' kernels and ``prev_loss``, and its
gradient function is made once (``backend.value_and_grad_fn``, with ``prev_loss`` as state),
as Keras's JAX training step takes trainable and non-trainable variables: on jax the loss is
then traced once and its ``cond`` compiled once, where a loss closing over a new decision every
step made eager JAX compile the cond twice a step (a step took 65-90 ms, now 8-9 ms). Its ops
still run one by one.
"""

import keras
from keras import ops

from equiv.records import StepRecord


class SumSquaredError(keras.losses.Loss):
    def __init__(self, dtype):
        super().__init__(name="sum_squared_error", reduction="sum", dtype=dtype)

    def call(self, y_true, y_pred):
        return ops.sum(ops.square(y_pred - y_true), axis=-1)


def load_dense(layer, kernel):
    """Canonical kernels are (in, out), as a Dense kernel is: loaded as they are."""
    layer.set_weights([kernel])


class Trainer:
    def __init__(self, state, backend):
        self.backend = backend
        cfg, dtype = state.config, state.dtype
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.hidden = keras.layers.Dense(cfg["H"], activation="relu", use_bias=False, dtype=dtype)
        self.head_a = keras.layers.Dense(cfg["D_out"], use_bias=False, dtype=dtype)
        self.head_b = keras.layers.Dense(cfg["D_out"], use_bias=False, dtype=dtype)
        for layer, fan_in, name in (
            (self.hidden, cfg["D_in"], "w1"),
            (self.head_a, cfg["H"], "w2a"),
            (self.head_b, cfg["H"], "w2b"),
        ):
            layer.build((None, fan_in))
            load_dense(layer, state.params[name])
        self.named = {
            "w1": self.hidden.kernel,
            "w2a": self.head_a.kernel,
            "w2b": self.head_b.kernel,
        }
        self.prev_loss = keras.Variable(cfg["initial_prev_loss"], dtype=dtype, trainable=False)
        self.threshold = ops.convert_to_tensor(cfg["threshold"], dtype=dtype)
        self.variables = list(self.named.values())
        self.loss_fn = SumSquaredError(dtype)
        with backend.floatx(dtype):  # the learning rate is a variable of floatx()
            self.optimizer = keras.optimizers.SGD(learning_rate=cfg["lr"])
        self.optimizer.build(self.variables)

        # made once: the loss reads no variables but these (prev_loss read, not differentiated)
        self.value_and_grad = backend.value_and_grad_fn(
            self.compute_loss, self.variables, state=[self.prev_loss]
        )

    def compute_loss(self):
        use_a = ops.less(self.prev_loss, self.threshold)
        h = self.hidden(self.x)
        y_pred = ops.cond(use_a, lambda: self.head_a(h), lambda: self.head_b(h))
        return self.loss_fn(self.y, y_pred)

    def run_step(self):
        use_a = ops.less(self.prev_loss, self.threshold)  # the branch the loss takes, recorded
        loss, grads = self.value_and_grad()
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        self.prev_loss.assign(loss)
        self.last = (loss, grads, use_a)

    def record(self):
        to_np = self.backend.to_numpy
        loss, grads, use_a = self.last
        return StepRecord(
            loss=to_np(loss)[()],
            grads={n: to_np(g) for n, g in zip(self.named, grads, strict=True)},
            params={n: to_np(v) for n, v in self.named.items()},
            branch="w2a" if bool(to_np(use_a)) else "w2b",
        )


def build(state, backend):
    return Trainer(state, backend)
