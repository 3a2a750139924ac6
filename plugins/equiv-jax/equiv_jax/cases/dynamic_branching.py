"""dynamic_branching in JAX: a Python ``if`` on the previous loss, the seed's dynamic graph.

Each step reads the previous loss back to the host (``float(loss)``) and plain Python picks
w2a or w2b; only the chosen weight goes into the differentiated function, so the other's
gradient is zeros (reported as such) and it is not updated. In ``jax.jit`` mode the jitted part
is the step for a given pair (w1, w2): both branches have the same shapes, so it is traced once,
and the branch stays in Python, which is what "dynamic" means. static_graph_step puts the branch
inside the compiled step instead.

``load_state`` loads the previous loss with the parameters: the next branch is decided from it.
"""

import jax
import jax.numpy as jnp
from equiv.records import StepRecord

from equiv_jax import trainer as base

NAMES = ("w1", "w2a", "w2b")


def loss_fn(w1, w2, x, y):
    y_pred = jax.nn.relu(x @ w1) @ w2
    return jnp.sum((y_pred - y) ** 2)


def make_train_step(lr: float):
    def train_step(w1, w2, x, y):
        loss, (g1, g2) = jax.value_and_grad(loss_fn, argnums=(0, 1))(w1, w2, x, y)
        return loss, g1, g2, w1 - lr * g1, w2 - lr * g2

    return train_step


class Trainer(base.Trainer):
    def __init__(self, state, backend):
        self.backend = backend
        cfg = state.config
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.params = {n: backend.to_native(state.params[n]) for n in NAMES}
        self.zeros = jnp.zeros_like(self.params["w2a"])  # the unused branch's gradient
        self.threshold = cfg["threshold"]
        self.initial_prev_loss = self.prev_loss = cfg["initial_prev_loss"]
        self.step = backend.transform(make_train_step(cfg["lr"]))

    def loaded_prev_loss(self, prev_loss):
        return {"prev_loss": self.initial_prev_loss if prev_loss is None else float(prev_loss)}

    def run_step(self):
        branch = "w2a" if self.prev_loss < self.threshold else "w2b"
        w = self.params
        loss, g1, g2, w1, w2 = self.step(w["w1"], w[branch], self.x, self.y)
        self.prev_loss = float(loss)  # to the host: the next branch is a Python decision
        w["w1"], w[branch] = w1, w2
        grads = {"w1": g1, "w2a": self.zeros, "w2b": self.zeros}
        grads[branch] = g2
        self.last = (loss, grads, branch)
        self.backend.track((loss, w))

    def record(self):
        to_np = self.backend.to_numpy
        loss, grads, branch = self.last
        return StepRecord(
            loss=to_np(loss)[()],
            grads={n: to_np(g) for n, g in grads.items()},
            params={n: to_np(p) for n, p in self.params.items()},
            branch=branch,
        )


def build(state, backend):
    return Trainer(state, backend)
