"""parallel_blocks in JAX: two ParallelBlocks, relu((x @ w1 + b1) * (x @ w2 + b2)), then an
affine output layer; mean squared error; Adam; by hand.

No layer library, as the plugin's keras_sequential: the parameters are one dict in the case's
canonical names and (in, out) layout, ``jnp.mean`` over every element as ``mse_loss``,
``jax.value_and_grad``, and the case config's optimizer (Adam, Algorithm 1, written by hand in
``equiv_jax.optim``) with its host-side bias corrections passed into the jitted step.
"""

import jax
import jax.numpy as jnp
from equiv.records import StepRecord

from equiv_jax.cases.keras_sequential import Trainer as SequentialTrainer
from equiv_jax.optim import make_optimizer

BLOCKS = ("p1", "p2")


def parallel_block(params, prefix, x):
    h1 = x @ params[f"{prefix}_w1"] + params[f"{prefix}_b1"]
    h2 = x @ params[f"{prefix}_w2"] + params[f"{prefix}_b2"]
    return jax.nn.relu(h1 * h2)


def loss_fn(params, x, y):
    h = x
    for prefix in BLOCKS:
        h = parallel_block(params, prefix, h)
    y_pred = h @ params["out_w"] + params["out_b"]
    return jnp.mean((y_pred - y) ** 2)


def make_train_step(optimizer):
    def train_step(params, opt_state, hyper, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        new_params, opt_state = optimizer.update(params, grads, opt_state, hyper)
        return loss, grads, new_params, opt_state

    return train_step


class Trainer(SequentialTrainer):
    """The plugin's keras_sequential trainer (its step) over this case's parameters."""

    def __init__(self, state, backend):
        self.backend = backend
        self.names = tuple(state.params)
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.params = {n: backend.to_native(v) for n, v in state.params.items()}
        self.optimizer = make_optimizer(state.config)
        self.opt_state = self.optimizer.init(self.params)
        self.step = backend.transform(make_train_step(self.optimizer))

    def record(self):
        to_np = self.backend.to_numpy
        return StepRecord(
            loss=to_np(self.loss)[()],
            grads={n: to_np(self.grads[n]) for n in self.names},
            params={n: to_np(self.params[n]) for n in self.names},
        )


def build(state, backend):
    return Trainer(state, backend)
