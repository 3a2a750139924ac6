"""dynamic_branching in Keras 3: Python picks which output layer the step goes through.

A hidden ``Dense(H, relu, use_bias=False)`` and two heads, ``Dense(D_out, use_bias=False)``
each, for w2a and w2b; the previous loss is read back into Python and an ``if`` picks the head,
the Keras form of the seed's dynamic graph (the same code on all three Keras backends). The
gradient is taken with respect to all three kernels, so the unused head's is zeros (the
backend's autodiff reports no dependence as zeros), and only the used kernels are updated.
Sum-of-squares loss, SGD, explicit dtypes: as two_layer_mlp's Keras code.
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
        self.heads = {
            n: keras.layers.Dense(cfg["D_out"], use_bias=False, dtype=dtype) for n in ("w2a", "w2b")
        }
        self.hidden.build((None, cfg["D_in"]))
        load_dense(self.hidden, state.params["w1"])
        for name, head in self.heads.items():
            head.build((None, cfg["H"]))
            load_dense(head, state.params[name])
        self.named = {"w1": self.hidden.kernel, **{n: h.kernel for n, h in self.heads.items()}}
        self.variables = list(self.named.values())
        self.loss_fn = SumSquaredError(dtype)
        with backend.floatx(dtype):  # the learning rate is a variable of floatx()
            self.optimizer = keras.optimizers.SGD(learning_rate=cfg["lr"])
        self.optimizer.build(self.variables)
        self.threshold = cfg["threshold"]
        self.prev_loss = cfg["initial_prev_loss"]

    def run_step(self):
        branch = "w2a" if self.prev_loss < self.threshold else "w2b"
        head = self.heads[branch]

        def compute_loss():
            return self.loss_fn(self.y, head(self.hidden(self.x)))

        loss, grads = self.backend.value_and_grad(compute_loss, self.variables)
        grads = dict(zip(self.named, grads, strict=True))
        self.optimizer.apply_gradients([(grads[n], self.named[n]) for n in ("w1", branch)])
        self.prev_loss = float(loss)
        self.last = (loss, grads, branch)

    def record(self):
        to_np = self.backend.to_numpy
        loss, grads, branch = self.last
        return StepRecord(
            loss=to_np(loss)[()],
            grads={n: to_np(g) for n, g in grads.items()},
            params={n: to_np(v) for n, v in self.named.items()},
            branch=branch,
        )


def build(state, backend):
    return Trainer(state, backend)
