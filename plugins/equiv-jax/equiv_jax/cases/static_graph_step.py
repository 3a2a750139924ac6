"""static_graph_step in JAX: the whole step, branch included, as one pure function.

The branch is data: ``jax.lax.cond`` on prev_loss < threshold, inside the differentiated loss,
so ``jax.value_and_grad`` gives the branch not taken a zero gradient and its update is a
no-op. The previous loss stays a device array between steps (never read back to the host), so
in ``jax.jit`` mode the step is traced once and replayed: one compiled graph, as a TF1 Session
or a ``tf.function``. The eager mode runs the same function op by op, as the control.
``load_state`` puts the previous loss back on the device with the parameters.

The loss is a module-level function under ``jax.checkpoint``, with everything it reads as an
argument (the branch decision too, as a traced boolean). Eagerly, JAX compiles each primitive
once per set of parameters, and a ``cond``'s parameters are its branch jaxprs: differentiating
``lax.cond`` op by op builds new ones on every call (JAX 0.10), so every step compiled the cond
twice anew (forward and transposed), ~0.1 s a step. ``jax.checkpoint`` stages the loss out as
one jaxpr, cached by function and argument types, which JAX differentiates once; its equations,
the cond among them, are still dispatched one by one, and each is compiled once. (A closure
made anew each step would defeat that cache.) The default policy saves no intermediates, so the
backward pass recomputes the forward; the numbers are bitwise those of the plain
``value_and_grad``, in both modes.
"""

import jax
import jax.numpy as jnp
import numpy as np
from equiv.records import StepRecord

from equiv_jax import trainer as base

NAMES = ("w1", "w2a", "w2b")


def _use_a(h, w2a, w2b):
    return h @ w2a


def _use_b(h, w2a, w2b):
    return h @ w2b


@jax.checkpoint
def loss_fn(params, use_a, x, y):
    h = jax.nn.relu(x @ params["w1"])
    y_pred = jax.lax.cond(use_a, _use_a, _use_b, h, params["w2a"], params["w2b"])
    return jnp.sum((y_pred - y) ** 2)


def make_train_step(lr: float, threshold: float):
    def train_step(params, prev_loss, x, y):
        use_a = prev_loss < threshold
        loss, grads = jax.value_and_grad(loss_fn)(params, use_a, x, y)
        new_params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
        return loss, grads, new_params, use_a

    return train_step


class Trainer(base.Trainer):
    def __init__(self, state, backend):
        self.backend = backend
        cfg = state.config
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.params = {n: backend.to_native(state.params[n]) for n in NAMES}
        self.initial_prev_loss = cfg["initial_prev_loss"]
        self.prev_loss = backend.to_native(np.asarray(self.initial_prev_loss, state.dtype))
        self.step = backend.transform(make_train_step(cfg["lr"], cfg["threshold"]))

    def loaded_prev_loss(self, prev_loss):
        """The previous loss as the device array the next step decides on (None: the
        config's, before the first step), of the dtype the step returns."""
        value = self.initial_prev_loss if prev_loss is None else prev_loss
        return {"prev_loss": self.backend.to_native(np.asarray(value, self.prev_loss.dtype))}

    def run_step(self):
        loss, grads, self.params, use_a = self.step(self.params, self.prev_loss, self.x, self.y)
        self.prev_loss = loss  # stays on the device: the decision is inside the graph
        self.last = (loss, grads, use_a)
        self.backend.track((loss, self.params))

    def record(self):
        to_np = self.backend.to_numpy
        loss, grads, use_a = self.last
        return StepRecord(
            loss=to_np(loss)[()],
            grads={n: to_np(grads[n]) for n in NAMES},
            params={n: to_np(self.params[n]) for n in NAMES},
            branch="w2a" if bool(use_a) else "w2b",
        )


def build(state, backend):
    return Trainer(state, backend)
