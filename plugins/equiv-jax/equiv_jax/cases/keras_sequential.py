"""keras_sequential in JAX: Dense(relu) -> Dense with biases, mean squared error, by hand.

No layer library: two affine maps over a parameter dict (kernels in the canonical (in, out)
layout, which is also JAX's ``x @ w``), ``jnp.mean`` over every element as Keras's
MeanSquaredError, ``jax.value_and_grad``, and the optimizer the case config names (SGD or
Adam, written by hand in ``equiv_jax.optim``). The optimizer's host-side scalars (Adam's bias
corrections) enter the jitted step as arguments, so the step is traced once.
"""

import jax
import jax.numpy as jnp
from equiv.records import StepRecord

from equiv_jax import trainer as base
from equiv_jax.optim import make_optimizer

PARAMS = ("w1", "b1", "w2", "b2")


def forward(params, x):
    h = jax.nn.relu(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def loss_fn(params, x, y):
    return jnp.mean((forward(params, x) - y) ** 2)


def make_train_step(optimizer):
    def train_step(params, opt_state, hyper, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        new_params, opt_state = optimizer.update(params, grads, opt_state, hyper)
        return loss, grads, new_params, opt_state

    return train_step


class Trainer(base.Trainer):
    def __init__(self, state, backend):
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.params = {n: backend.to_native(state.params[n]) for n in PARAMS}
        self.optimizer = make_optimizer(state.config)
        self.opt_state = self.optimizer.init(self.params)
        self.step = backend.transform(make_train_step(self.optimizer))

    def run_step(self):
        hyper = self.optimizer.hyper()
        self.loss, self.grads, self.params, self.opt_state = self.step(
            self.params, self.opt_state, hyper, self.x, self.y
        )
        self.backend.track((self.loss, self.params))

    def record(self):
        to_np = self.backend.to_numpy
        return StepRecord(
            loss=to_np(self.loss)[()],
            grads={n: to_np(self.grads[n]) for n in PARAMS},
            params={n: to_np(self.params[n]) for n in PARAMS},
        )


def build(state, backend):
    return Trainer(state, backend)
