"""static_graph_step in JAX: the whole step, branch included, as one pure function.

The branch is data: ``jax.lax.cond`` on prev_loss < threshold, inside the differentiated loss,
so ``jax.value_and_grad`` gives the branch not taken a zero gradient and its update is a
no-op. The previous loss stays a device array between steps (never read back to the host), so
in ``jax.jit`` mode the step is traced once and replayed: one compiled graph, as a TF1 Session
or a ``tf.function``. The eager mode runs the same function op by op, as the control.
"""

import jax
import jax.numpy as jnp
import numpy as np
from equiv.records import StepRecord

NAMES = ("w1", "w2a", "w2b")


def _use_a(h, w2a, w2b):
    return h @ w2a


def _use_b(h, w2a, w2b):
    return h @ w2b


def make_train_step(lr: float, threshold: float):
    def train_step(params, prev_loss, x, y):
        use_a = prev_loss < threshold

        def loss_fn(params):
            h = jax.nn.relu(x @ params["w1"])
            y_pred = jax.lax.cond(use_a, _use_a, _use_b, h, params["w2a"], params["w2b"])
            return jnp.sum((y_pred - y) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        new_params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
        return loss, grads, new_params, use_a

    return train_step


class Trainer:
    def __init__(self, state, backend):
        self.backend = backend
        cfg = state.config
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.params = {n: backend.to_native(state.params[n]) for n in NAMES}
        self.prev_loss = backend.to_native(np.asarray(cfg["initial_prev_loss"], state.dtype))
        self.step = backend.transform(make_train_step(cfg["lr"], cfg["threshold"]))

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
