"""sigmoid_custom_op in JAX: the sigmoid as a ``jax.custom_vjp`` with a hand-written backward.

The forward saves its output y as the residual; the backward is grad_y * y * (1 - y), the
seed's ``torch.autograd.Function`` in JAX's terms. JAX differentiates everything else; the
whole step is one pure function, jitted whole in ``jax.jit`` mode (custom_vjp traces through).
"""

import jax
import jax.numpy as jnp
from equiv.records import StepRecord

from equiv_jax import trainer as base


@jax.custom_vjp
def sigmoid(h):
    return 1.0 / (1.0 + jnp.exp(-h))


def sigmoid_fwd(h):
    y = sigmoid(h)
    return y, y


def sigmoid_bwd(y, grad_y):
    return (grad_y * y * (1.0 - y),)


sigmoid.defvjp(sigmoid_fwd, sigmoid_bwd)


def loss_fn(params, x, y):
    y_pred = sigmoid(x @ params["w1"]) @ params["w2"]
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
