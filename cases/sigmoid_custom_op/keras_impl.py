"""sigmoid_custom_op in Keras 3: a ``Sigmoid`` layer around a ``keras.ops.custom_gradient`` op.

The op returns y = 1 / (1 + exp(-h)) and a hand-written backward grad_y * y * (1 - y). Keras 3
maps ``ops.custom_gradient`` to ``tf.custom_gradient``, a ``torch.autograd.Function`` and
``jax.custom_gradient``, so the same layer runs on all three backends; the backward takes
``(*args, upstream=None)`` because torch passes the upstream gradient by keyword and TF and jax
positionally (the form Keras documents for backend-neutral code). The rest is two_layer_mlp's
Keras code with this layer between the Dense layers.
"""

import keras
from keras import ops

from equiv.records import StepRecord


@ops.custom_gradient
def sigmoid(h):
    y = 1.0 / (1.0 + ops.exp(-h))

    def backward(*args, upstream=None):
        grad_y = args[0] if upstream is None else upstream
        return grad_y * y * (1.0 - y)

    return y, backward


class Sigmoid(keras.layers.Layer):
    def call(self, h):
        return sigmoid(h)


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
        self.model = keras.Sequential(
            [
                keras.Input(shape=(cfg["D_in"],), dtype=dtype),
                keras.layers.Dense(cfg["H"], use_bias=False, dtype=dtype),
                Sigmoid(dtype=dtype),
                keras.layers.Dense(cfg["D_out"], use_bias=False, dtype=dtype),
            ]
        )
        self.dense1, _, self.dense2 = self.model.layers
        load_dense(self.dense1, state.params["w1"])
        load_dense(self.dense2, state.params["w2"])
        self.loss_fn = SumSquaredError(dtype)
        with backend.floatx(dtype):  # the learning rate is a variable of floatx()
            self.optimizer = keras.optimizers.SGD(learning_rate=cfg["lr"])
        self.variables = [self.dense1.kernel, self.dense2.kernel]
        self.optimizer.build(self.variables)

    def compute_loss(self):
        return self.loss_fn(self.y, self.model(self.x))

    def run_step(self):
        loss, grads = self.backend.value_and_grad(self.compute_loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        self.last = (loss, grads)

    def record(self):
        to_np = self.backend.to_numpy
        loss, (g1, g2) = self.last
        return StepRecord(
            loss=to_np(loss)[()],
            grads={"w1": to_np(g1), "w2": to_np(g2)},
            params={"w1": to_np(self.dense1.kernel), "w2": to_np(self.dense2.kernel)},
        )


def build(state, backend):
    return Trainer(state, backend)
