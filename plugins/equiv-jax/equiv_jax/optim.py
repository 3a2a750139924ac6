"""SGD and Adam by hand (optax is not a dependency), as pure functions over pytrees.

The update rules are equiv's reference ones (``equiv.optim``), written with the same
expressions in the same order so that float32 rounds the same way. Adam is the paper's
Algorithm 1, as ``torch.optim.Adam``: p -= lr * m_hat / (sqrt(v_hat) + eps). SGD with a
momentum is torch's form: buf <- momentum * buf + g; p -= lr * buf.

The bias corrections 1 - beta^t are computed on the host in Python floats, as the reference
does, and enter a jitted step as arguments: JAX treats a Python float argument as a weakly
typed scalar, so a new step number is a new value, not a retrace.

``load`` turns the canonical optimizer state (``TrainingState.optimizer``: ``momentum/<p>``,
``m/<p>``, ``v/<p>``, ``t``) into an optimizer's own: the state pytree a step takes, arrays of
the same shapes and dtypes as the ones it replaces (so that a jitted step is not retraced),
and the host-side step count. A key that is absent is state not made yet: zeros, as ``init``
makes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from equiv.backends.base import CellSkip
from equiv.contract.trainer import StateNotLoadable

Params = dict[str, jax.Array]
#: the backend's ``to_native``: a numpy array to a JAX array of its dtype
ToNative = Callable[[np.ndarray], jax.Array]


def replace_arrays(
    current: Mapping[str, jax.Array],
    canonical: Mapping[str, np.ndarray],
    to_native: ToNative,
    what: str,
    absent: str = "refuse",
) -> dict[str, jax.Array]:
    """New arrays for ``current`` (name -> array) from ``canonical``, under the same names in
    the same order, each of its current array's shape and dtype: JAX's arrays are immutable,
    so "in place" is a new array of the same type, which a jitted step takes without a retrace.

    ``absent``: what a name of ``current`` that ``canonical`` lacks gets: "refuse" (a
    ``StateNotLoadable``) or "zeros" (state not made yet). A name only ``canonical`` has, or a
    shape that differs, is a ``StateNotLoadable`` naming ``what``; nothing is converted then."""
    unknown = sorted(set(canonical) - set(current))
    if unknown:
        raise StateNotLoadable(f"the port has no {what} named {', '.join(unknown[:5])}")
    missing = [name for name in current if name not in canonical]
    if missing and absent == "refuse":
        raise StateNotLoadable(f"the state has no {what} {', '.join(missing[:5])}")
    for name, value in canonical.items():
        shape, expected = np.shape(value), tuple(current[name].shape)
        if shape != expected:
            raise StateNotLoadable(f"{what} {name} is {shape} in the state, {expected} here")
    out = {}
    for name, array in current.items():
        if name in canonical:
            out[name] = to_native(np.asarray(canonical[name], dtype=array.dtype))
        else:
            out[name] = jnp.zeros_like(array)
    return out


def _refuse_unknown(optimizer: str, canonical: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(canonical) - known)
    if unknown:
        raise StateNotLoadable(f"{optimizer} keeps no state {', '.join(unknown[:5])}")


def _keyed(canonical: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The canonical entries ``<prefix>/<param>`` by parameter name."""
    return {k.split("/", 1)[1]: v for k, v in canonical.items() if k.startswith(f"{prefix}/")}


class SGD:
    """p <- p - lr * g; with ``cfg["momentum"]`` (nonzero) torch's form: state the buffers,
    buf <- momentum * buf + g (the first step's buffer is g: buffers start at zero, and
    momentum * 0 + g is g exactly), p <- p - lr * buf."""

    def __init__(self, cfg: dict[str, Any]):
        self.lr = cfg["lr"]
        self.momentum = cfg.get("momentum", 0.0)

    def init(self, params: Params):
        return jax.tree.map(jnp.zeros_like, params) if self.momentum else ()

    def hyper(self) -> tuple:
        """This step's host-side scalars (none for SGD)."""
        return ()

    def update(self, params: Params, grads: Params, state, hyper: tuple):
        if not self.momentum:
            return jax.tree.map(lambda p, g: p - self.lr * g, params, grads), state
        lr, momentum = self.lr, self.momentum
        buffers = jax.tree.map(lambda b, g: momentum * b + g, state, grads)
        return jax.tree.map(lambda p, b: p - lr * b, params, buffers), buffers

    def load(self, canonical: Mapping[str, np.ndarray], state, to_native: ToNative):
        """The state for canonical ``momentum/<p>`` (``state``, the current one, gives names,
        shapes and dtypes); an absent buffer is zeros (not made yet)."""
        names = set(state) if self.momentum else set()
        _refuse_unknown(type(self).__name__, canonical, {f"momentum/{n}" for n in names})
        if not self.momentum:
            return state
        return replace_arrays(state, _keyed(canonical, "momentum"), to_native, "buffer", "zeros")


class Adam:
    """Adam, Algorithm 1; state (m, v), the step count ``t`` lives on the host."""

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

    def load(self, canonical: Mapping[str, np.ndarray], state: tuple, to_native: ToNative):
        """The state (m, v) for canonical ``m/<p>`` and ``v/<p>`` (``state``, the current
        one, gives names, shapes and dtypes; absent moments are zeros), and the host-side step
        count from ``t`` (absent: 0, before the first step), which the bias corrections of the
        next step (``hyper``) count on from. Nothing changes where the state is refused."""
        m, v = state
        known = {"t"} | {f"{k}/{n}" for k in ("m", "v") for n in m}
        _refuse_unknown(type(self).__name__, canonical, known)
        m = replace_arrays(m, _keyed(canonical, "m"), to_native, "first moment", "zeros")
        v = replace_arrays(v, _keyed(canonical, "v"), to_native, "second moment", "zeros")
        self.t = int(canonical.get("t", 0))
        return (m, v)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def make_optimizer(cfg: dict[str, Any]):
    name = cfg.get("optimizer", "sgd")
    if name not in OPTIMIZERS:
        raise CellSkip(f"equiv-jax has no {name!r} optimizer (it has {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[name](cfg)
