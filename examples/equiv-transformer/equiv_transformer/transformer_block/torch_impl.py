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
(``torch.jit.script``, ``torch.compile``) is applied to the whole model. Layout: the canonical
q/k/v kernels go into the packed ``in_proj_weight`` (``equiv_transformer.layout``); Linear
weights are (out, in), converted by the backend's ``linear_weight`` / ``canonical_kernel``.
TorchScript cannot compile a bias-free ``nn.MultiheadAttention``: ``scriptable`` works around it
for ``torch.jit`` alone.
"""

import functools

import torch
import torch.nn.functional as F
from equiv.records import StepRecord
from equiv.support.torch import load_adam_state
from torch import nn

from equiv_transformer import layout


def explicit(cfg, **settings):
    """The keyword arguments this port passes: the given settings in the matched case, none
    (the framework's defaults) in the defaults case."""
    return settings if cfg["settings"] == "matched" else {}


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["d"]
        ln = explicit(cfg, eps=cfg["ln_eps"])
        self.ln1 = nn.LayerNorm(d, **ln)
        self.attn = nn.MultiheadAttention(d, cfg["heads"], bias=False, batch_first=True)
        self.ln2 = nn.LayerNorm(d, **ln)
        gelu = explicit(cfg, approximate="tanh" if cfg["gelu"] == "tanh" else "none")
        self.mlp = nn.Sequential(
            nn.Linear(d, cfg["mlp"]), nn.GELU(**gelu), nn.Linear(cfg["mlp"], d)
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
    parameters (no gradient, no update, nothing recorded), and adding 0 changes no number."""
    d = attn.embed_dim
    del attn._parameters["in_proj_bias"]
    attn.register_buffer("in_proj_bias", torch.zeros(3 * d))
    del attn.out_proj._parameters["bias"]
    attn.out_proj.register_buffer("bias", torch.zeros(d))


class Trainer:
    def __init__(self, state, backend):
        self.backend = backend
        cfg, p = state.config, state.params
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        t = cfg["T"]
        self.mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        model = Block(cfg)
        if backend.mode == "jit":
            scriptable(model.attn)
        model = model.to(getattr(torch, state.dtype))
        self.load(model, p)
        self.block = model
        self.model = backend.transform(model)
        opt = explicit(
            cfg,
            weight_decay=cfg["weight_decay"],
            betas=(cfg["beta_1"], cfg["beta_2"]),
            eps=cfg["epsilon"],
        )
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], **opt)

    def torch_values(self, model, p) -> list[tuple]:
        """(torch parameter, value) for canonical arrays ``p``: wq, wk and wv fused into
        ``in_proj_weight``, (in, out) kernels as (out, in) weights."""
        b = self.backend
        return [
            (model.ln1.weight, b.to_native(p["ln1_gamma"])),
            (model.ln1.bias, b.to_native(p["ln1_beta"])),
            (model.attn.in_proj_weight, b.to_native(layout.torch_in_proj(p))),
            (model.attn.out_proj.weight, b.linear_weight(p["wo"])),
            (model.ln2.weight, b.to_native(p["ln2_gamma"])),
            (model.ln2.bias, b.to_native(p["ln2_beta"])),
            (model.mlp[0].weight, b.linear_weight(p["w1"])),
            (model.mlp[0].bias, b.to_native(p["b1"])),
            (model.mlp[2].weight, b.linear_weight(p["w2"])),
            (model.mlp[2].bias, b.to_native(p["b2"])),
        ]

    def load(self, model, p):
        with torch.no_grad():
            for param, value in self.torch_values(model, p):
                param.copy_(value)

    def load_state(self, resume):
        """The reference's parameters and AdamW moments into the running block, in place;
        the moments of the fused ``in_proj_weight`` fuse as its parameters do."""
        self.load(self.block, resume.params)
        to_torch = functools.partial(self.torch_values, self.block)
        load_adam_state(self.optimizer, to_torch, layout.PARAM_NAMES, resume.optimizer)

    def run_step(self):
        self.optimizer.zero_grad()
        loss = F.mse_loss(self.model(self.x, self.mask), self.y)
        loss.backward()
        self.optimizer.step()
        self.loss = loss.detach()

    def canonical(self, pick):
        """The canonical arrays of ``pick(tensor)`` (the parameter itself, or its ``.grad``)."""
        b, m = self.backend, self.block
        np_ = b.to_numpy
        out = {
            "ln1_gamma": np_(pick(m.ln1.weight)),
            "ln1_beta": np_(pick(m.ln1.bias)),
            **layout.from_torch_in_proj(np_(pick(m.attn.in_proj_weight))),
            "wo": b.canonical_kernel(pick(m.attn.out_proj.weight)),
            "ln2_gamma": np_(pick(m.ln2.weight)),
            "ln2_beta": np_(pick(m.ln2.bias)),
            "w1": b.canonical_kernel(pick(m.mlp[0].weight)),
            "b1": np_(pick(m.mlp[0].bias)),
            "w2": b.canonical_kernel(pick(m.mlp[2].weight)),
            "b2": np_(pick(m.mlp[2].bias)),
        }
        return {n: out[n] for n in layout.PARAM_NAMES}

    def record(self):
        return StepRecord(
            loss=self.backend.to_numpy(self.loss)[()],
            grads=self.canonical(lambda t: t.grad),
            params=self.canonical(lambda t: t),
        )


def build(state, backend):
    return Trainer(state, backend)
