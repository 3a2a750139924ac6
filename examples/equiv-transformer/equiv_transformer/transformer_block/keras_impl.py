"""The transformer block ported to Keras 3: one functional model, the same code on TensorFlow,
torch and jax.

``LayerNormalization``, ``MultiHeadAttention(num_heads, key_dim=d // heads, use_bias=False)`` (no
q/k/v or output biases: the spec's notes say why) called with ``use_causal_mask=True``, ``Dense(mlp,
activation="gelu")`` and ``Dense(d)``, residual adds, ``keras.losses.MeanSquaredError`` and
``keras.optimizers.AdamW``. The step takes the gradient with the backend's autodiff
(Keras 3 optimizers have no ``minimize``) and calls ``apply_gradients``.

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
optimizer is built under it (its learning rate is a ``floatx()`` variable; ``port`` does it).
Layout: Dense kernels are (in, out) as the canonical ones; the attention's ``EinsumDense``
kernels are reshapes of them (``equiv.layouts.keras_multi_head_attention``). The step, the
record and ``load_state`` (AdamW's moments reshaped as their kernels) are
``equiv.support.keras_port``'s.
"""

import keras
from equiv import layouts
from equiv.support.keras_port import port


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


def keras_layout(cfg):
    """The layers ``ln1``, ``attn``, ``ln2``, ``dense1``, ``dense2``, under the canonical names."""
    d = cfg["d"]
    parts = {
        "ln1": layouts.keras_layer_norm(d),
        "attn": layouts.keras_multi_head_attention(d, cfg["heads"], bias=False),
        "ln2": layouts.keras_layer_norm(d),
        "dense1": layouts.keras_dense(d, cfg["mlp"]),
        "dense2": layouts.keras_dense(cfg["mlp"], d),
    }
    names = {f"{ln}.{p}": f"{ln}_{p}" for ln in ("ln1", "ln2") for p in ("gamma", "beta")}
    names |= {f"attn.w{n}": f"w{n}" for n in "qkvo"}
    names |= {
        "dense1.kernel": "w1",
        "dense1.bias": "b1",
        "dense2.kernel": "w2",
        "dense2.bias": "b2",
    }
    return layouts.compose("transformer_block", parts, framework_sep="/").named(names)


def make_optimizer(cfg):
    settings = explicit(
        cfg,
        weight_decay=cfg["weight_decay"],
        beta_1=cfg["beta_1"],
        beta_2=cfg["beta_2"],
        epsilon=cfg["epsilon"],
    )
    return keras.optimizers.AdamW(learning_rate=cfg["lr"], **settings)


def build(state, backend):
    cfg, dtype = state.config, state.dtype
    loss = keras.losses.MeanSquaredError(dtype=dtype)
    return port(
        state,
        backend,
        make_model(cfg, dtype),
        layout=keras_layout(cfg),
        loss=loss,
        optimizer=lambda: make_optimizer(cfg),
    )
