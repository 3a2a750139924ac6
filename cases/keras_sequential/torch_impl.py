"""keras_sequential in PyTorch: the seed's nn example with SGD.

``nn.Sequential(Linear, ReLU, Linear)``, ``F.mse_loss`` (mean over every element, as Keras's
MeanSquaredError), ``optim.SGD``; ``equiv.support.torch_port.port`` steps it (``zero_grad``
before ``backward``) with the mode applied to the model (``torch.jit.script(model)``,
``torch.compile(model)``). ``nn.Linear.weight`` is (out, in): ``layout`` says so
(``layouts.torch_linear``), under the case's names w1, b1, w2, b2.
"""

import torch
import torch.nn.functional as F

from equiv import layouts
from equiv.support.torch import linear
from equiv.support.torch_port import port


def make_optimizer(params, cfg):
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(
            params,
            lr=cfg["lr"],
            betas=(cfg.get("beta_1", 0.9), cfg.get("beta_2", 0.999)),
            eps=cfg.get("epsilon", 1e-8),
        )
    return torch.optim.SGD(params, lr=cfg["lr"])


def layout(cfg):
    """The ``state_dict`` of ``Sequential(Linear, ReLU, Linear)`` (``0.weight`` ...)."""
    return layouts.compose(
        "keras_sequential",
        {
            "0": layouts.torch_linear(cfg["D_in"], cfg["H"]),
            "2": layouts.torch_linear(cfg["H"], cfg["D_out"]),
        },
    ).named({"0.kernel": "w1", "0.bias": "b1", "2.kernel": "w2", "2.bias": "b2"})


def load(backend, dense1, dense2, p):
    """The canonical w1, b1, w2, b2 copied into two ``nn.Linear`` layers (``linear_weight``
    transposes a canonical (in, out) kernel to an (out, in) weight); their names for record.
    (minibatch's port loads its ``TwoLayerNet`` with it.)"""
    with torch.no_grad():
        dense1.weight.copy_(backend.linear_weight(p["w1"]))
        dense1.bias.copy_(backend.to_native(p["b1"]))
        dense2.weight.copy_(backend.linear_weight(p["w2"]))
        dense2.bias.copy_(backend.to_native(p["b2"]))
    return {**linear(dense1, "w1", "b1"), **linear(dense2, "w2", "b2")}


def build(state, backend):
    cfg = state.config
    model = torch.nn.Sequential(
        torch.nn.Linear(cfg["D_in"], cfg["H"]),
        torch.nn.ReLU(),
        torch.nn.Linear(cfg["H"], cfg["D_out"]),
    )
    return port(
        state,
        backend,
        model,
        layout=layout(cfg),
        loss=F.mse_loss,
        optimizer=lambda params: make_optimizer(params, cfg),
    )
