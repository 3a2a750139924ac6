"""Numpy optimizers for the reference: the update rules that frameworks are compared against."""

from __future__ import annotations

from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]


def copied(value: np.ndarray, copy: bool) -> np.ndarray:
    return value.copy() if copy else value


class SGD:
    """p <- p - lr * g, the seed's manual update and ``optim.SGD`` without momentum.

    With ``cfg["momentum"]`` (nonzero), torch's form (``torch.optim.SGD``, no dampening):
    buffer <- momentum * buffer + g, the first step's buffer g itself; p <- p - lr * buffer.
    (Keras's SGD keeps velocity <- momentum * velocity - lr * g instead: the same maths for a
    constant lr, another rounding.)"""

    def __init__(self, cfg: dict[str, Any]):
        self.lr = cfg["lr"]
        self.momentum = cfg.get("momentum", 0.0)
        self.buffer: Arrays = {}

    def state_dict(self, copy: bool = True) -> Arrays:
        """The carried state in the canonical vocabulary (``TrainingState.optimizer``); with
        ``copy`` False, this rule's own arrays (see ``Carrying.training_state``)."""
        return {f"momentum/{k}": copied(b, copy) for k, b in self.buffer.items()}

    def load_state_dict(self, state: Arrays, copy: bool = True) -> None:
        self.buffer = {
            k.split("/", 1)[1]: copied(v, copy)
            for k, v in state.items()
            if k.startswith("momentum/")
        }

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        if not self.momentum:
            return {k: p - self.lr * grads[k] for k, p in params.items()}
        # In place where the arithmetic allows: on resnet18's 11M parameters the temporaries
        # of ``momentum * buffer + g`` and ``p - lr * buffer`` took 2/3 of a reference step.
        # Same operations in the same order, so the same bits.
        out = {}
        for k, p in params.items():
            g = grads[k]
            buffer = self.buffer.get(k)
            if buffer is None:
                buffer = self.buffer[k] = g.copy()
            else:
                np.multiply(buffer, p.dtype.type(self.momentum), out=buffer)
                np.add(buffer, g, out=buffer)
            update = np.multiply(buffer, self.lr)  # the new parameters' array, filled next
            out[k] = np.subtract(p, update, out=update)
        return out


class Adam:
    """Adam as in the paper's Algorithm 1 and ``torch.optim.Adam``:
    p <- p - lr * m_hat / (sqrt(v_hat) + eps), bias corrections applied to m and v.

    Scalars (betas, their powers, the bias corrections) are computed in the parameters' dtype:
    a float32 run then shows the cancellation in 1 - beta_2^t that float32 frameworks
    (Keras) have, so the float32 calibration allows for it."""

    def __init__(self, cfg: dict[str, Any]):
        self.lr = cfg["lr"]
        self.b1 = cfg.get("beta_1", 0.9)
        self.b2 = cfg.get("beta_2", 0.999)
        self.eps = cfg.get("epsilon", 1e-8)
        self.t = 0
        self.m: Arrays = {}
        self.v: Arrays = {}

    def state_dict(self, copy: bool = True) -> Arrays:
        """The carried state in the canonical vocabulary (``TrainingState.optimizer``)."""
        return {
            "t": np.asarray(self.t),
            **{f"m/{k}": copied(m, copy) for k, m in self.m.items()},
            **{f"v/{k}": copied(v, copy) for k, v in self.v.items()},
        }

    def load_state_dict(self, state: Arrays, copy: bool = True) -> None:
        self.t = int(state.get("t", 0))
        self.m = {k[2:]: copied(v, copy) for k, v in state.items() if k.startswith("m/")}
        self.v = {k[2:]: copied(v, copy) for k, v in state.items() if k.startswith("v/")}

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        self.t += 1
        out = {}
        for k, p in params.items():
            g = grads[k]
            dt = p.dtype.type
            b1, b2, t = dt(self.b1), dt(self.b2), dt(self.t)
            self.m[k] = b1 * self.m.get(k, np.zeros_like(p)) + (dt(1) - b1) * g
            self.v[k] = b2 * self.v.get(k, np.zeros_like(p)) + (dt(1) - b2) * g * g
            m_hat = self.m[k] / (dt(1) - b1**t)
            v_hat = self.v[k] / (dt(1) - b2**t)
            out[k] = p - dt(self.lr) * m_hat / (np.sqrt(v_hat) + dt(self.eps))
        return out


class AdamEpsilonHat(Adam):
    """Adam in the paper's "epsilon hat" form (end of section 2), as Keras implements it:
    alpha_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t); p <- p - alpha_t * m / (sqrt(v) + eps).
    Algebraically Adam with eps replaced by eps * sqrt(1 - beta_2^t): early steps differ most.

    ``bias_correction_betas: "float32"`` rounds the betas to float32 before taking their powers
    for alpha_t (and only there), as Keras on TensorFlow does in a float64 cell:
    ``ops.cast(self.beta_1, "float64")`` first turns the Python float into a float32 tensor.
    The moment updates use ``1 - beta`` as Python floats, so they stay exact."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__(cfg)
        self.power_dtype = cfg.get("bias_correction_betas")

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        self.t += 1
        out = {}
        for k, p in params.items():
            g = grads[k]
            dt = p.dtype.type
            b1, b2, t = dt(self.b1), dt(self.b2), dt(self.t)
            if self.power_dtype:
                rounded = np.dtype(self.power_dtype).type
                p1, p2 = dt(rounded(self.b1)) ** t, dt(rounded(self.b2)) ** t
            else:
                p1, p2 = b1**t, b2**t
            alpha = dt(self.lr) * np.sqrt(dt(1) - p2) / (dt(1) - p1)
            m = self.m.get(k, np.zeros_like(p))
            v = self.v.get(k, np.zeros_like(p))
            self.m[k] = m + (g - m) * dt(1.0 - self.b1)
            self.v[k] = v + (g * g - v) * dt(1.0 - self.b2)
            out[k] = p - (self.m[k] * alpha) / (np.sqrt(self.v[k]) + dt(self.eps))
        return out


class AdamW(Adam):
    """``torch.optim.AdamW``: decoupled weight decay p <- p * (1 - lr * weight_decay) (the
    factor computed in Python floats, as torch's ``param.mul_(1 - lr * weight_decay)``), then
    ``Adam``'s update of the decayed p. ``cfg["weight_decay"]`` (torch's default 0.01)."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__(cfg)
        self.weight_decay = cfg.get("weight_decay", 0.01)

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        factor = 1.0 - self.lr * self.weight_decay
        decayed = {k: p * p.dtype.type(factor) for k, p in params.items()}
        return super().step(decayed, grads)


class AdamWEpsilonHat(AdamEpsilonHat):
    """``keras.optimizers.AdamW``: before the update, ``_apply_weight_decay`` assigns
    p <- p - p * wd * lr (wd and lr cast to p's dtype; Keras's ``base_optimizer.py``), then
    ``AdamEpsilonHat``'s update of the decayed p. ``cfg["weight_decay"]`` (Keras's default
    0.004). Unlike torch the decay is subtracted, not a factor: another rounding, and a
    different default. ``weight_decay_dtype: "float32"`` rounds wd to float32 first, as Keras
    on TensorFlow does in a float64 cell (``ops.cast(self.weight_decay, "float64")`` turns the
    Python float into a float32 tensor first, as for ``bias_correction_betas``)."""

    def __init__(self, cfg: dict[str, Any]):
        super().__init__(cfg)
        wd, rounded = cfg.get("weight_decay", 0.004), cfg.get("weight_decay_dtype")
        self.weight_decay = float(np.dtype(rounded).type(wd)) if rounded else wd

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        decayed = {}
        for k, p in params.items():
            dt = p.dtype.type
            decayed[k] = p - p * dt(self.weight_decay) * dt(self.lr)
        return super().step(decayed, grads)


OPTIMIZERS = {
    "sgd": SGD,
    "adam": Adam,
    "adam_epsilon_hat": AdamEpsilonHat,
    "adamw": AdamW,
    "adamw_epsilon_hat": AdamWEpsilonHat,
}


class Frozen:
    """Another update rule with some parameters left where they are (``cfg["frozen"]``, a
    tuple of names): their gradients are computed and reported, never applied.

    Why: a framework that ties parameters together trains their combination once where
    another trains each part. Keras's LSTM holds one bias where torch holds ``bias_ih`` and
    ``bias_hh``; under SGD torch moves their sum by 2 lr g a step and Keras its one bias by
    lr g, and Adam likewise (each part's moments are those of g). torch with ``bias_hh``
    frozen trains the sum as Keras does: the variant ``{"frozen": ("lstm.bias_hh",)}``
    reproduces the difference."""

    def __init__(self, inner, frozen: tuple[str, ...]):
        self.inner = inner
        self.frozen = tuple(frozen)

    def state_dict(self, copy: bool = True) -> Arrays:
        return self.inner.state_dict(copy)

    def load_state_dict(self, state: Arrays, copy: bool = True) -> None:
        self.inner.load_state_dict(state, copy)

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        unknown = [k for k in self.frozen if k not in params]
        if unknown:
            raise KeyError(f"frozen names {unknown}, not parameters of the case")
        out = self.inner.step(params, grads)
        for k in self.frozen:
            out[k] = params[k].copy()
        return out


def make_optimizer(cfg: dict[str, Any]):
    optimizer = OPTIMIZERS[cfg.get("optimizer", "sgd")](cfg)
    frozen = cfg.get("frozen")
    return Frozen(optimizer, frozen) if frozen else optimizer


#: the case config keys the update rules above read: a declared variant made only of these
#: (and ``compute_dtype``) is expressible on any reference, a port included, since equiv
#: applies the update itself (``equiv.backends.reference_port``)
OPTIMIZER_KEYS = frozenset(
    {
        "optimizer",
        "lr",
        "momentum",
        "beta_1",
        "beta_2",
        "epsilon",
        "bias_correction_betas",
        "weight_decay",
        "weight_decay_dtype",
        "frozen",
    }
)
