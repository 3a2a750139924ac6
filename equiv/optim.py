"""Numpy optimizers for the reference: the update rules that frameworks are compared against."""

from __future__ import annotations

from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]


class SGD:
    """p <- p - lr * g, the seed's manual update and ``optim.SGD`` without momentum."""

    def __init__(self, cfg: dict[str, Any]):
        self.lr = cfg["lr"]

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        return {k: p - self.lr * grads[k] for k, p in params.items()}


class Adam:
    """Adam as in the paper's Algorithm 1 and ``torch.optim.Adam``:
    p <- p - lr * m_hat / (sqrt(v_hat) + eps), bias corrections applied to m and v."""

    def __init__(self, cfg: dict[str, Any]):
        self.lr = cfg["lr"]
        self.b1 = cfg.get("beta_1", 0.9)
        self.b2 = cfg.get("beta_2", 0.999)
        self.eps = cfg.get("epsilon", 1e-8)
        self.t = 0
        self.m: Arrays = {}
        self.v: Arrays = {}

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        self.t += 1
        out = {}
        for k, p in params.items():
            g = grads[k]
            self.m[k] = self.b1 * self.m.get(k, np.zeros_like(p)) + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v.get(k, np.zeros_like(p)) + (1 - self.b2) * g * g
            m_hat = self.m[k] / (1 - self.b1**self.t)
            v_hat = self.v[k] / (1 - self.b2**self.t)
            out[k] = p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
        return out


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def make_optimizer(cfg: dict[str, Any]):
    return OPTIMIZERS[cfg.get("optimizer", "sgd")](cfg)
