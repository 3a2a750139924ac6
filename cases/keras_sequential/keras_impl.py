"""keras_sequential in Keras 3: the seed's "Keras: High-level API" program.

``keras.Sequential`` with an ``Input`` layer, ``Dense(H, relu)`` and ``Dense(D_out)``,
``keras.losses.MeanSquaredError`` and ``keras.optimizers.SGD`` (or ``Adam`` when the case
config asks for it), the same code on the tensorflow, torch and jax backends. The seed trains
with ``opt.minimize(step, params)``: that is Keras 2; Keras 3 optimizers have no ``minimize``, so
the step takes the gradient with the backend's autodiff (``backend.value_and_grad``: a
``GradientTape`` on TensorFlow) and calls ``apply_gradients``. The seed's ``loss_fn(y_pred, y)``
swaps Keras's (y_true, y_pred) order, harmless for a squared error; here it is in order.

Keras defaults that would otherwise differ from the case: layers and the loss compute in
``floatx()`` (float32) unless given a dtype, so each gets the cell's; the learning rate is a
``floatx()`` variable, so the optimizer is built under the cell's floatx; Adam's epsilon is
taken from the config, defaulting to the reference's 1e-8 (Keras's default is 1e-7).
Kernels are (in, out) in Keras as in the canonical state: ``set_weights`` takes them as they are.
"""

import keras

from equiv.records import StepRecord


def make_optimizer(cfg):
    if cfg["optimizer"] == "adam":
        return keras.optimizers.Adam(
            learning_rate=cfg["lr"],
            beta_1=cfg.get("beta_1", 0.9),
            beta_2=cfg.get("beta_2", 0.999),
            epsilon=cfg.get("epsilon", 1e-8),
        )
    return keras.optimizers.SGD(learning_rate=cfg["lr"])


def load_dense(layer, kernel, bias):
    layer.set_weights([kernel, bias])


class Trainer:
    def __init__(self, state, backend):
        self.backend = backend
        cfg, p, dtype = state.config, state.params, state.dtype
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.model = keras.Sequential(
            [
                keras.Input(shape=(cfg["D_in"],), dtype=dtype),
                keras.layers.Dense(cfg["H"], activation="relu", dtype=dtype),
                keras.layers.Dense(cfg["D_out"], dtype=dtype),
            ]
        )
        self.dense1, self.dense2 = self.model.layers
        load_dense(self.dense1, p["w1"], p["b1"])
        load_dense(self.dense2, p["w2"], p["b2"])
        self.loss_fn = keras.losses.MeanSquaredError(dtype=dtype)
        with backend.floatx(dtype):  # the learning rate is a variable of floatx()
            self.optimizer = make_optimizer(cfg)
        d1, d2 = self.dense1, self.dense2
        self.named = {"w1": d1.kernel, "b1": d1.bias, "w2": d2.kernel, "b2": d2.bias}
        self.variables = list(self.named.values())
        self.optimizer.build(self.variables)

    def compute_loss(self):
        return self.loss_fn(self.y, self.model(self.x))

    def run_step(self):
        loss, grads = self.backend.value_and_grad(self.compute_loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        self.last = (loss, grads)

    def record(self):
        to_np = self.backend.to_numpy
        loss, grads = self.last
        return StepRecord(
            loss=to_np(loss)[()],
            grads={n: to_np(g) for n, g in zip(self.named, grads, strict=True)},
            params={n: to_np(v) for n, v in self.named.items()},
        )


def build(state, backend):
    return Trainer(state, backend)
