"""SGD and Adam by hand (optax is not a dependency), as pure functions over pytrees.

The update rules are equiv's reference ones (``equiv.optim``), written with the same
expressions in the same order so that float32 rounds the same way. Adam is the paper's
Algorithm 1, as ``torch.optim.Adam``: p -= lr * m_hat / (sqrt(v_hat) + eps).

The bias corrections 1 - beta^t are computed on the host in Python floats, as the reference
does, and enter a jitted step as arguments: JAX treats a Python float argument as a weakly
typed scalar, so a new step number is a new value, not a retrace.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from equiv.backends.base import CellSkip

Params = dict[str, jax.Array]


class SGD:
    """p <- p - lr * g."""

    def __init__(self, cfg: dict[str, Any]):
        self.lr = cfg["lr"]

    def init(self, params: Params) -> tuple:
        return ()

    def hyper(self) -> tuple:
        """This step's host-side scalars (none for SGD)."""
        return ()

    def update(self, params: Params, grads: Params, state: tuple, hyper: tuple):
        new = jax.tree.map(lambda p, g: p - self.lr * g, params, grads)
        return new, state


class Adam:
    """Adam, Algorithm 1; state (m, v), the step count lives on the host."""

    def __init__(self, cfg: dict[str, Any]):
        self.lr = cfg["lr"]
        self.b1 = cfg.get("beta_1", 0.9)
        self.b2 = cfg.get("beta_2", 0.999)
        self.eps = cfg.get("epsilon", 1e-8)
        self.t = 0

    def init(self, params: Params) -> tuple:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return (zeros, zeros)

    def hyper(self) -> tuple:
        self.t += 1
        return (1 - self.b1**self.t, 1 - self.b2**self.t)

    def update(self, params: Params, grads: Params, state: tuple, hyper: tuple):
        m, v = state
        bc1, bc2 = hyper
        b1, b2, lr, eps = self.b1, self.b2, self.lr, self.eps
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)

        def step(p, m, v):
            m_hat = m / bc1
            v_hat = v / bc2
            return p - lr * m_hat / (jnp.sqrt(v_hat) + eps)

        return jax.tree.map(step, params, m, v), (m, v)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def make_optimizer(cfg: dict[str, Any]):
    name = cfg.get("optimizer", "sgd")
    if name not in OPTIMIZERS:
        raise CellSkip(f"equiv-jax has no {name!r} optimizer (it has {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[name](cfg)
