"""The transformer block ported to JAX: pure functions over the canonical parameter dict.

JAX has no layer library of its own, so LayerNorm and attention are written here as a Flax user
would get them, with Flax's and optax's defaults for what the torch model left implicit:

- GELU: ``jax.nn.gelu``, whose default is ``approximate=True`` (the tanh form; jax-ml/jax#4428);
- LayerNorm: mean and biased variance over the last axis, eps 1e-6 (``flax.linen.LayerNorm``;
  its variance is two-pass here, where Flax's default ``use_fast_variance`` takes
  E[x^2] - E[x]^2: the same number unless |mean| >> std, not the case here);
- the causal mask: ``jnp.where(mask, scores, finfo(dtype).min)``, as Flax's
  ``dot_product_attention_weights`` fills masked logits;
- AdamW as ``optax.adamw`` (optax/_src/alias.py) defines it: ``scale_by_adam`` (b1 0.9, b2 0.999,
  eps 1e-8, eps_root 0: m_hat / (sqrt(v_hat) + eps)), then ``add_decayed_weights`` (u + wd * p,
  weight_decay 1e-4), then ``scale_by_learning_rate``: p <- p - lr * (adam + wd * p). That is
  torch's p * (1 - lr * wd) - lr * adam in another order; only the default decay differs.

In the matched case the port passes torch's settings instead (``gelu(approximate=False)``,
eps 1e-5, weight_decay 0.01, fill -inf). optax is not a dependency: the update is written out
(state (m, v); the step count and the bias corrections 1 - beta^t live on the host and enter
the jitted step as arguments, so it is traced once). The optimizer is equiv-jax's ``Adam``
with this update: its state, its step count and ``load`` (the canonical m, v and t, for
``load_state``) are Adam's, as the reference's AdamW's are.
"""

import jax
import jax.numpy as jnp
from equiv.support.records import step_record
from equiv_jax import trainer as base
from equiv_jax.optim import Adam

from equiv_transformer.layout import PARAM_NAMES

#: what the JAX port uses where the torch model set nothing (Flax's and optax's defaults)
DEFAULTS = {"gelu": "tanh", "ln_eps": 1e-6, "weight_decay": 1e-4, "epsilon": 1e-8}


def settings(cfg):
    """The settings this port runs with: torch's in the matched case, its own defaults else."""
    keys = ("gelu", "ln_eps", "weight_decay", "epsilon")
    if cfg["settings"] == "matched":
        return {k: cfg[k] for k in keys}
    return dict(DEFAULTS)


def layer_norm(x, gamma, beta, eps):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * gamma + beta


def attention(p, h, heads, fill):
    """Causal multi-head self-attention without biases; heads are contiguous blocks of q/k/v's
    columns."""
    b, t, d = h.shape

    def split(a):  # (B, T, d) -> (B, heads, T, head_dim)
        return a.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)

    q, k, v = (split(h @ p[f"w{n}"]) for n in "qkv")
    scores = q @ k.swapaxes(-1, -2) / jnp.sqrt(jnp.asarray(d // heads, h.dtype))
    mask = jnp.tril(jnp.ones((t, t), dtype=bool))
    scores = jnp.where(mask, scores, fill)
    out = jax.nn.softmax(scores, axis=-1) @ v
    return out.transpose(0, 2, 1, 3).reshape(b, t, d) @ p["wo"]


def make_loss(cfg, s, dtype):
    heads, approximate = cfg["heads"], s["gelu"] == "tanh"
    fill = -jnp.inf if cfg["settings"] == "matched" else jnp.finfo(dtype).min

    def loss_fn(p, x, y):
        h = layer_norm(x, p["ln1_gamma"], p["ln1_beta"], s["ln_eps"])
        x = x + attention(p, h, heads, fill)
        h = layer_norm(x, p["ln2_gamma"], p["ln2_beta"], s["ln_eps"])
        h = jax.nn.gelu(h @ p["w1"] + p["b1"], approximate=approximate)
        out = x + h @ p["w2"] + p["b2"]
        return jnp.mean(jnp.square(out - y))

    return loss_fn


class AdamW(Adam):
    """optax.adamw's arithmetic; Adam's state (m, v) and host-side step count, whose
    ``hyper()`` gives the step's bias corrections."""

    def __init__(self, cfg, s):
        super().__init__({**cfg, "epsilon": s["epsilon"]})
        self.wd = s["weight_decay"]

    def update(self, params, grads, state, hyper):
        m, v = state
        bc1, bc2 = hyper
        b1, b2, lr, wd, eps = self.b1, self.b2, self.lr, self.wd, self.eps
        m = jax.tree.map(lambda m, g: (1 - b1) * g + b1 * m, m, grads)
        v = jax.tree.map(lambda v, g: (1 - b2) * g**2 + b2 * v, v, grads)

        def step(p, m, v):
            u = (m / bc1) / (jnp.sqrt(v / bc2) + eps) + wd * p
            return p + -lr * u

        return jax.tree.map(step, params, m, v), (m, v)


def make_train_step(loss_fn, optimizer):
    def train_step(params, opt_state, hyper, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        new_params, opt_state = optimizer.update(params, grads, opt_state, hyper)
        return loss, grads, new_params, opt_state

    return train_step


class Trainer(base.Trainer):
    def __init__(self, state, backend):
        self.backend = backend
        cfg = state.config
        s = settings(cfg)
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.params = {n: backend.to_native(state.params[n]) for n in PARAM_NAMES}
        self.optimizer = AdamW(cfg, s)
        self.opt_state = self.optimizer.init(self.params)
        loss_fn = make_loss(cfg, s, state.dtype)
        self.step = backend.transform(make_train_step(loss_fn, self.optimizer))

    def run_step(self):
        hyper = self.optimizer.hyper()
        self.loss, self.grads, self.params, self.opt_state = self.step(
            self.params, self.opt_state, hyper, self.x, self.y
        )
        self.backend.track((self.loss, self.params))

    def record(self):
        # JAX returns dicts with sorted keys: the record lists the parameters in the case's order
        params = {n: self.params[n] for n in PARAM_NAMES}
        return step_record(self.backend.to_numpy, self.loss, self.grads, params)


def build(state, backend):
    return Trainer(state, backend)
