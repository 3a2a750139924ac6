"""two_layer_mlp in JAX: the loss as a pure function, ``jax.value_and_grad``, the update by hand.

The step (loss, gradients and the new parameters) is one pure function of (params, x, y);
the mode is applied to it whole (``jax.jit`` traces it once). Parameters are a dict pytree
under their canonical names and layout (w1 is (D_in, H), as ``x @ w1`` wants).
"""

import jax
import jax.numpy as jnp
from equiv.records import StepRecord

from equiv_jax import trainer as base


def loss_fn(params, x, y):
    y_pred = jax.nn.relu(x @ params["w1"]) @ params["w2"]
    return jnp.sum((y_pred - y) ** 2)


def make_train_step(lr: float):
    def train_step(params, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        new_params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
        return loss, grads, new_params

    return train_step


class Trainer(base.Trainer):
    def __init__(self, state, backend):
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.params = {n: backend.to_native(state.params[n]) for n in ("w1", "w2")}
        self.step = backend.transform(make_train_step(state.config["lr"]))

    def run_step(self):
        self.loss, self.grads, self.params = self.step(self.params, self.x, self.y)
        self.backend.track((self.loss, self.params))

    def record(self):
        to_np = self.backend.to_numpy
        return StepRecord(
            loss=to_np(self.loss)[()],
            grads={n: to_np(g) for n, g in self.grads.items()},
            params={n: to_np(p) for n, p in self.params.items()},
        )


def build(state, backend):
    return Trainer(state, backend)
