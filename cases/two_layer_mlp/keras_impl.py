"""two_layer_mlp in Keras 3, the same code on the tensorflow, torch and jax backends.

``Dense(H, relu, use_bias=False)`` then ``Dense(D_out, use_bias=False)`` in a ``Sequential``; a
sum-of-squares ``keras.losses.Loss`` (Keras has none built in: ``MeanSquaredError`` averages);
``keras.optimizers.SGD`` is plain gradient descent. Every layer and the loss get the cell's
dtype explicitly: a Keras loss otherwise computes in ``floatx()``, float32. The gradient comes
from the backend's autodiff (``backend.value_and_grad``; Keras 3 has no neutral one).
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
        self.model = keras.Sequential(
            [
                keras.Input(shape=(cfg["D_in"],), dtype=dtype),
                keras.layers.Dense(cfg["H"], activation="relu", use_bias=False, dtype=dtype),
                keras.layers.Dense(cfg["D_out"], use_bias=False, dtype=dtype),
            ]
        )
        self.dense1, self.dense2 = self.model.layers
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
