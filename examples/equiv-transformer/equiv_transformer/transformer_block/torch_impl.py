"""The transformer block in PyTorch, as its author wrote it: the program the others port.

``nn.LayerNorm``, ``nn.MultiheadAttention(bias=False, batch_first=True)`` (no q/k/v or output
biases: the spec's notes say why) with a boolean causal
``attn_mask`` (True = may *not* attend, torch's convention; ``F._canonical_mask`` turns it into
an additive -inf mask), ``nn.GELU()``, ``F.mse_loss``, ``torch.optim.AdamW``. torch's defaults
are the case's reference settings (torch 2.13 source): ``nn.LayerNorm(eps=1e-5)``,
``nn.GELU(approximate="none")`` (exact, erf), ``AdamW(weight_decay=1e-2, eps=1e-8,
betas=(0.9, 0.999))``, whose decay is decoupled: ``param.mul_(1 - lr * weight_decay)`` before
the Adam step (torch/optim/adam.py). So the defaults case passes nothing but lr, and the
matched case passes the same values explicitly.

The block is a ``Module`` whose ``forward`` takes the mask as an argument, so that the mode
(``torch.jit.script``, ``torch.compile``) is applied to the whole model;
``equiv.support.torch_port.port`` loads, steps and records it. ``layout``: the canonical q/k/v
kernels are packed into ``in_proj_weight`` (``layouts.torch_multihead_attention``), Linear
weights are (out, in). TorchScript cannot compile a bias-free ``nn.MultiheadAttention``:
``scriptable`` works around it for ``torch.jit`` alone.

The port can be the reference (``equiv run --reference torch.eager``, docs/port-reference.md)
for the declared explanations of the Keras and JAX cells: it reads the forward keys their
variants set (``VARIANT_KEYS``). In the defaults case a setting is passed only where the config
differs from torch's default, which only such a variant makes it do; the plain build of either
case is the program above.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from equiv import layouts
from equiv.support.torch_port import port
from torch import nn

from equiv_transformer.transformer_block.spec import LAYERS

#: the config keys besides the optimizer's that this port reads, so that it can be the reference
#: for a declared explanation's variant that sets them (equiv.backends.reference_port)
VARIANT_KEYS = ("ln_eps", "gelu", "gelu_inv_sqrt2")

#: torch's defaults (nn.LayerNorm, nn.GELU), which the defaults case's config holds
TORCH_DEFAULTS = {"ln_eps": 1e-5, "gelu": "exact"}


def explicit(cfg, **settings):
    """The keyword arguments this port passes: the given settings in the matched case, none
    (the framework's defaults) in the defaults case."""
    return settings if cfg["settings"] == "matched" else {}


def forward_setting(cfg, key, **settings):
    """``explicit``'s keyword arguments for the forward setting ``cfg[key]``, and in the
    defaults case also where the config differs from torch's default: only a declared
    explanation's variant makes it differ (``VARIANT_KEYS``), when this port is the reference.
    The defaults case's own config holds torch's defaults, and passes nothing."""
    if cfg[key] != TORCH_DEFAULTS[key]:
        return settings
    return explicit(cfg, **settings)


class Float32InvSqrt2GELU(nn.Module):
    """The exact GELU as TensorFlow's ``tf.nn.gelu`` computes it for float64, the variant
    ``gelu_inv_sqrt2: "float32"`` (the spec's ``KERAS_TF_GELU``): 0.5 x (1 + erf(x c)) with
    c = 1/sqrt(2) rounded to float32 (``math_ops.cast(0.7071067811865476, float64)`` converts
    the Python float to a float32 tensor first), the numpy reference's ``gelu`` under that
    variant. Built only under the variant: the port's own GELU is ``nn.GELU``."""

    def __init__(self):
        super().__init__()
        self.c = float(np.float32(1 / math.sqrt(2)))

    def forward(self, x):
        return 0.5 * x * (1 + torch.erf(x * self.c))


def gelu_module(cfg) -> nn.Module:
    """``nn.GELU`` as the config asks, or the float32-constant GELU under its variant."""
    if cfg.get("gelu_inv_sqrt2") == "float32":
        if cfg["gelu"] != "exact":
            raise ValueError("gelu_inv_sqrt2 is a constant of the exact GELU, not the tanh form")
        return Float32InvSqrt2GELU()
    approximate = "tanh" if cfg["gelu"] == "tanh" else "none"
    return nn.GELU(**forward_setting(cfg, "gelu", approximate=approximate))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["d"]
        ln = forward_setting(cfg, "ln_eps", eps=cfg["ln_eps"])
        self.ln1 = nn.LayerNorm(d, **ln)
        self.attn = nn.MultiheadAttention(d, cfg["heads"], bias=False, batch_first=True)
        self.ln2 = nn.LayerNorm(d, **ln)
        self.mlp = nn.Sequential(
            nn.Linear(d, cfg["mlp"]), gelu_module(cfg), nn.Linear(cfg["mlp"], d)
        )

    def forward(self, x, mask):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


def scriptable(attn: nn.MultiheadAttention) -> None:
    """TorchScript cannot compile ``nn.MultiheadAttention(bias=False)`` (torch 2.x,
    torch/nn/modules/activation.py: ``forward`` reads ``self.in_proj_bias.dtype`` and passes
    ``out_proj.bias`` to ``torch._native_multi_head_attention``'s ``Tensor`` argument, both None
    here). For ``torch.jit.script`` only, the two missing biases become zero buffers: not
    parameters (no gradient, no update, nothing recorded), not in the ``state_dict`` (not
    persistent: the layout has no biases), and adding 0 changes no number."""
    d = attn.embed_dim
    del attn._parameters["in_proj_bias"]
    attn.register_buffer("in_proj_bias", torch.zeros(3 * d), persistent=False)
    del attn.out_proj._parameters["bias"]
    attn.out_proj.register_buffer("bias", torch.zeros(d), persistent=False)


def layout(cfg):
    """The block's ``state_dict`` (``ln1.weight``, ``attn.in_proj_weight``, ``mlp.0.weight``
    ...) under the case's names (``equiv_transformer.layout``)."""
    d, mlp = cfg["d"], cfg["mlp"]
    block = layouts.compose(
        "transformer_block",
        {
            "ln1": layouts.torch_layer_norm(d),
            "attn": layouts.torch_multihead_attention(d, cfg["heads"], bias=False),
            "ln2": layouts.torch_layer_norm(d),
            "mlp.0": layouts.torch_linear(d, mlp),
            "mlp.2": layouts.torch_linear(mlp, d),
        },
    )
    return block.named(
        {
            "ln1.gamma": "ln1_gamma",
            "ln1.beta": "ln1_beta",
            **{f"attn.w{n}": f"w{n}" for n in "qkvo"},
            "ln2.gamma": "ln2_gamma",
            "ln2.beta": "ln2_beta",
            "mlp.0.kernel": "w1",
            "mlp.0.bias": "b1",
            "mlp.2.kernel": "w2",
            "mlp.2.bias": "b2",
        }
    )


def build(state, backend):
    cfg = state.config
    t = cfg["T"]
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    model = Block(cfg)
    if backend.mode == "jit":
        scriptable(model.attn)
    opt = explicit(
        cfg,
        weight_decay=cfg["weight_decay"],
        betas=(cfg["beta_1"], cfg["beta_2"]),
        eps=cfg["epsilon"],
    )
    return port(
        state,
        backend,
        model,
        layout=layout(cfg),
        loss=F.mse_loss,
        optimizer=lambda params: torch.optim.AdamW(params, lr=cfg["lr"], **opt),
        inputs=("x", mask),
        # the MLP under the Keras port's names: Dense(activation="gelu") outputs the GELU
        activations={"dense1": "mlp.1", "dense2": "mlp.2", "mlp.0": None, "mlp.2": None},
        activation_names=LAYERS,
    )
