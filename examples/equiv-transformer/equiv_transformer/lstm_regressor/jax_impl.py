"""The LSTM regressor ported to JAX by hand: ``jax.lax.scan`` over time, one bias per gate.

The cell is torch's and Keras's (gates i, f, g, o in that order, sigmoid and tanh): z = x_t @
W_ih + h @ W_hh + b, split in four; c <- f * c + i * tanh(g); h <- o * tanh(c), from zero
state. The head reads the last step's h; the loss is ``jnp.mean`` of the squared error.

One bias, as a JAX author writes a gate (and as Flax's ``LSTMCell`` holds it, on its ``h*``
Dense layers): the second bias of torch's LSTM is there for cuDNN's kernel, not for the
maths. So the port holds ``lstm.bias`` = ``bias_ih + bias_hh``, and says so with its own
``layout`` (a ``summed`` rule): it reports the observable ``lstm.bias_ih+bias_hh``, each
part's gradient is the sum's (``grads_to_canonical``), and ``load_state`` loads the sum. Its
SGD then trains the sum once a step where torch trains it twice: the spec's ``SINGLE_BIAS``
declares it, with the variant ``frozen: ("lstm.bias_hh",)``.

The optimizer is equiv-jax's (``equiv_jax.optim``: SGD or Adam, as the config names). Under
``jax.eager`` the scan's body is traced and compiled again at every call (about 1 s a step
here, 0.2 ms under ``jax.jit``): the case's slowest cells.
"""

from dataclasses import replace

import jax
import jax.numpy as jnp
from equiv import layouts
from equiv.records import StepRecord
from equiv_jax import trainer as base
from equiv_jax.optim import make_optimizer


def lstm_layout(features, hidden):
    """This port's LSTM arrays against the canonical LSTM: the kernels as they are (x @ W),
    one bias that is the canonical two's sum."""
    g = 4 * hidden
    return layouts.Layout(
        f"jax_impl LSTM({features}, {hidden}), one bias",
        {"kernel_ih": (features, g), "kernel_hh": (hidden, g), "bias_ih": (g,), "bias_hh": (g,)},
        {"kernel_ih": (features, g), "kernel_hh": (hidden, g), "bias": (g,)},
        (
            layouts.copy("kernel_ih", "kernel_ih"),
            layouts.copy("kernel_hh", "kernel_hh"),
            layouts.summed(("bias_ih", "bias_hh"), "bias", "one bias per gate, as JAX code has"),
        ),
    )


def layout(cfg):
    """``lstm.kernel_ih``, ``lstm.kernel_hh``, ``lstm.bias`` (the sum), ``head.kernel`` (in,
    out), ``head.bias``; canonical names the spec's."""
    return layouts.compose(
        "lstm_regressor (JAX)",
        {
            "lstm": lstm_layout(cfg["F"], cfg["H"]),
            "head": layouts.keras_dense(cfg["H"], cfg["out"]),  # (in, out), as x @ w reads it
        },
    )


def lstm(p, x):
    """The output sequence (N, T, H) of one LSTM layer over x (N, T, F), from zero state."""
    w_ih, w_hh, b = p["lstm.kernel_ih"], p["lstm.kernel_hh"], p["lstm.bias"]

    def cell(carry, x_t):
        h, c = carry
        i, f, g, o = jnp.split(x_t @ w_ih + h @ w_hh + b, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((x.shape[0], w_hh.shape[0]), x.dtype)
    _, hs = jax.lax.scan(cell, (zeros, zeros), jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(hs, 0, 1)


def loss_fn(p, x, y):
    seq = lstm(p, x)
    out = seq[:, -1] @ p["head.kernel"] + p["head.bias"]
    return jnp.mean(jnp.square(out - y)), {"lstm": seq, "head": out}


def make_train_step(optimizer):
    def train_step(params, opt_state, hyper, x, y):
        (loss, acts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        new_params, opt_state = optimizer.update(params, grads, opt_state, hyper)
        return loss, acts, grads, new_params, opt_state

    return train_step


def own_slots(layout, optimizer):
    """The canonical optimizer state (``m/lstm.bias_ih``, ...) in this port's arrays: each
    slot converted as its parameter is. The summed bias has one slot where its parts have
    two, equal in exact arithmetic (each part's gradient is the sum's) but not in torch's
    (its float64 gradients of b_ih and b_hh differ in the last bit): it gets their mean."""
    out = {k: v for k, v in optimizer.items() if "/" not in k}  # Adam's t
    for rule in layout.rules:
        for slot in ("m", "v", "momentum"):
            parts = [optimizer.get(f"{slot}/{s}") for s in rule.sources]
            if any(p is None for p in parts):
                continue  # not made yet
            made = rule.forward(*parts) if rule.invertible else (sum(parts) / len(parts),)
            out.update({f"{slot}/{t}": a for t, a in zip(rule.targets, made, strict=True)})
    return out


class Trainer(base.Trainer):
    def __init__(self, state, backend):
        self.backend = backend
        self.layout = layout(state.config)
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        own = self.layout.to_framework(state.params)
        self.params = {n: backend.to_native(a) for n, a in own.items()}
        self.optimizer = make_optimizer(state.config)
        self.opt_state = self.optimizer.init(self.params)
        self.step = backend.transform(make_train_step(self.optimizer))

    def run_step(self):
        hyper = self.optimizer.hyper()
        self.loss, self.acts, self.grads, self.params, self.opt_state = self.step(
            self.params, self.opt_state, hyper, self.x, self.y
        )
        self.backend.track((self.loss, self.params))

    def record(self):
        to_np = self.backend.to_numpy
        names = self.layout.names
        return StepRecord(
            loss=to_np(self.loss)[()],
            grads=self.layout.grads_to_canonical({n: to_np(self.grads[n]) for n in names}),
            params=self.layout.observed({n: to_np(self.params[n]) for n in names}),
            activations={k: to_np(v) for k, v in self.acts.items()},
        )

    def load_state(self, resume):
        """The reference's state through the layout (the bias as the sum of its parts)."""
        own = self.layout.to_framework(resume.params)
        slots = own_slots(self.layout, resume.optimizer)
        super().load_state(replace(resume, params=own, optimizer=slots))


def build(state, backend):
    return Trainer(state, backend)
