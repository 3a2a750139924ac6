"""The transformer block ported to Keras 3: one functional model, the same code on TensorFlow,
torch and jax.

``LayerNormalization``, ``MultiHeadAttention(num_heads, key_dim=d // heads, use_bias=False)`` (no
q/k/v or output biases: the spec's notes say why) called with ``use_causal_mask=True``, ``Dense(mlp,
activation="gelu")`` and ``Dense(d)``, residual adds, ``keras.losses.MeanSquaredError`` and
``keras.optimizers.AdamW``. The step takes the gradient with the backend's autodiff
(``backend.value_and_grad``; Keras 3 optimizers have no ``minimize``) and calls ``apply_gradients``.

Keras 3.15's defaults, from its source, where they differ from the torch model's:
``LayerNormalization(epsilon=1e-3)`` (layers/normalization/layer_normalization.py);
``AdamW(learning_rate=0.001, weight_decay=0.004, epsilon=1e-7)`` (optimizers/adamw.py), its
update the epsilon-hat Adam of optimizers/adam.py after ``variable - variable * wd * lr``
(optimizers/base_optimizer.py, ``_apply_weight_decay``). Same as torch: the ``"gelu"``
activation is exact (``activations.gelu(x, approximate=False)``; it is ``keras.ops.gelu`` whose
default is the tanh approximation), weight decay applies to every variable. The causal mask
goes to ``ops.dot_product_attention(is_causal=True)``, whose masked logits are
-0.7 * finfo(float32).max, not -inf: no numeric difference here (no row is fully masked).
The matched case passes torch's epsilon and AdamW settings; the defaults case only lr.

Every layer gets the cell's dtype (Keras otherwise computes in ``floatx()``, float32), and the
optimizer is built under it (its learning rate is a ``floatx()`` variable). Layout: Dense
kernels are (in, out) as the canonical ones; the attention's ``EinsumDense`` kernels are
reshapes of them (``equiv_transformer.layout``).

``load_state`` puts the reference's training state at a later step into the running model, in
place: the parameters and AdamW's moments (``m/<p>``, ``v/<p>``: each in its parameter's
layout) reshaped as the variables are, then ``equiv.support.keras.load_training_state`` (the
moments into Keras's slots, the step count ``t`` into ``iterations``).
"""

from dataclasses import replace

import keras
import numpy as np
from equiv.records import StepRecord
from equiv.support.keras import load_training_state

from equiv_transformer import layout


def explicit(cfg, **settings):
    """The keyword arguments this port passes: the given settings in the matched case, none
    (the framework's defaults) in the defaults case."""
    return settings if cfg["settings"] == "matched" else {}


def gelu_activation(cfg):
    if cfg["settings"] != "matched":
        return "gelu"  # keras.activations.gelu, exact by default
    approximate = cfg["gelu"] == "tanh"
    return lambda h: keras.activations.gelu(h, approximate=approximate)


def make_model(cfg, dtype):
    d, heads = cfg["d"], cfg["heads"]
    ln = explicit(cfg, epsilon=cfg["ln_eps"])
    x = keras.Input(shape=(cfg["T"], d), dtype=dtype)
    h = keras.layers.LayerNormalization(dtype=dtype, name="ln1", **ln)(x)
    attention = keras.layers.MultiHeadAttention(
        heads, d // heads, use_bias=False, dtype=dtype, name="attn"
    )
    x1 = x + attention(h, h, use_causal_mask=True)
    h = keras.layers.LayerNormalization(dtype=dtype, name="ln2", **ln)(x1)
    h = keras.layers.Dense(cfg["mlp"], activation=gelu_activation(cfg), dtype=dtype, name="dense1")(
        h
    )
    out = x1 + keras.layers.Dense(d, dtype=dtype, name="dense2")(h)
    return keras.Model(x, out)


def variables_by_name(model):
    """Canonical name -> the Keras variable that holds it."""
    attn = model.get_layer("attn")
    ln1, ln2 = model.get_layer("ln1"), model.get_layer("ln2")
    d1, d2 = model.get_layer("dense1"), model.get_layer("dense2")
    named = {"ln1_gamma": ln1.gamma, "ln1_beta": ln1.beta}
    for n, dense in zip("qkv", (attn.query_dense, attn.key_dense, attn.value_dense), strict=True):
        named[f"w{n}"] = dense.kernel
    named["wo"] = attn.output_dense.kernel
    named.update({"ln2_gamma": ln2.gamma, "ln2_beta": ln2.beta})
    named.update({"w1": d1.kernel, "b1": d1.bias, "w2": d2.kernel, "b2": d2.bias})
    return {n: named[n] for n in layout.PARAM_NAMES}


def keras_arrays(params, heads):
    """The canonical arrays in the shapes of the Keras variables."""
    out = dict(params)
    for n in "qkv":
        out[f"w{n}"] = layout.keras_projection(params[f"w{n}"], heads)
    out["wo"] = layout.keras_output(params["wo"], heads)
    return out


def keras_optimizer_state(optimizer, heads):
    """The canonical optimizer state in the shapes of the Keras variables: AdamW's moments
    (``m/<p>``, ``v/<p>``, one per parameter, in its layout) as ``keras_arrays`` converts the
    parameters; ``t`` as it is."""
    out = dict(optimizer)
    for kind in ("m", "v"):
        moments = {k[len(kind) + 1 :]: v for k, v in optimizer.items() if k.startswith(f"{kind}/")}
        if moments:  # none before the first step
            out.update({f"{kind}/{n}": a for n, a in keras_arrays(moments, heads).items()})
    return out


def make_optimizer(cfg):
    settings = explicit(
        cfg,
        weight_decay=cfg["weight_decay"],
        beta_1=cfg["beta_1"],
        beta_2=cfg["beta_2"],
        epsilon=cfg["epsilon"],
    )
    return keras.optimizers.AdamW(learning_rate=cfg["lr"], **settings)


class Trainer:
    def __init__(self, state, backend):
        self.backend = backend
        cfg, dtype = state.config, state.dtype
        self.dtype = dtype
        self.heads = cfg["heads"]
        self.shapes = {n: v.shape for n, v in state.params.items()}
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.model = make_model(cfg, dtype)
        self.named = variables_by_name(self.model)
        for n, value in keras_arrays(state.params, cfg["heads"]).items():
            self.named[n].assign(value)
        self.loss_fn = keras.losses.MeanSquaredError(dtype=dtype)
        with backend.floatx(dtype):  # the learning rate is a variable of floatx()
            self.optimizer = make_optimizer(cfg)
        self.variables = list(self.named.values())
        self.optimizer.build(self.variables)

    def load_state(self, resume):
        """The reference's parameters and AdamW's state, reshaped as Keras holds them."""
        keras_state = replace(
            resume,
            params=keras_arrays(resume.params, self.heads),
            optimizer=keras_optimizer_state(resume.optimizer, self.heads),
        )
        load_training_state(type(self).__name__, self.optimizer, self.named, keras_state)

    def compute_loss(self):
        return self.loss_fn(self.y, self.model(self.x))

    def run_step(self):
        loss, grads = self.backend.value_and_grad(self.compute_loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        self.last = (loss, grads)

    def canonical(self, arrays):
        to_np = self.backend.to_numpy
        return {
            n: layout.from_keras(to_np(a), self.shapes[n])
            for n, a in zip(self.named, arrays, strict=True)
        }

    def record(self):
        loss, grads = self.last
        # Keras on torch computes a float64 cell's loss in float32 (declared by equiv's
        # keras.torch backend, compute_dtype): the record carries it in the cell's dtype.
        loss = np.asarray(self.backend.to_numpy(loss), dtype=self.dtype)
        return StepRecord(
            loss=loss[()],
            grads=self.canonical(grads),
            params=self.canonical(self.variables),
        )


def build(state, backend):
    return Trainer(state, backend)
