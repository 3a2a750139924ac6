"""The LSTM regressor in PyTorch, as its author wrote it: the program the others port, and the
case's reference (``reference_port="torch.eager"``).

``nn.LSTM(F, H, batch_first=True)`` (two biases, ``bias_ih_l0`` and ``bias_hh_l0``; gates i, f,
g, o), the output at the last time step, ``nn.Linear(H, out)``, ``F.mse_loss`` (mean),
``torch.optim.SGD`` (or ``Adam``, as the config names: torch's defaults, passed explicitly).
``equiv.support.torch_port.port`` loads, steps and records it through ``layout``
(``equiv.layouts.torch_lstm`` and ``torch_linear`` composed under the module names, so the
``lstm`` and ``head`` modules record their outputs: ``nn.LSTM``'s first output, the sequence).
Under ``torch.jit`` no activation is recorded (TorchScript hooks take one tensor out; the
trainer says so in ``not_observed``).

``VARIANT_KEYS``: the standard keys this port reads besides the optimizer's (which equiv's own
update rule applies when it is the reference), so that a declared or diagnosed variant with
them can be expressed on it: ``loss_reduction`` (``F.mse_loss``'s ``reduction``).
"""

import functools

import torch
import torch.nn.functional as F
from equiv import layouts
from equiv.support.torch_port import port
from torch import nn

VARIANT_KEYS = ("loss_reduction",)


class Regressor(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.lstm = nn.LSTM(cfg["F"], cfg["H"], batch_first=True)
        self.head = nn.Linear(cfg["H"], cfg["out"])

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def layout(cfg):
    return layouts.compose(
        "lstm_regressor",
        {
            "lstm": layouts.torch_lstm(cfg["F"], cfg["H"], batch_first=True),
            "head": layouts.torch_linear(cfg["H"], cfg["out"]),
        },
    )


def make_optimizer(cfg, params):
    if cfg["optimizer"] == "adam":
        betas = (cfg["beta_1"], cfg["beta_2"])
        return torch.optim.Adam(params, lr=cfg["lr"], betas=betas, eps=cfg["epsilon"])
    return torch.optim.SGD(params, lr=cfg["lr"])


def build(state, backend):
    cfg = state.config
    return port(
        state,
        backend,
        Regressor(cfg),
        layout=layout(cfg),
        loss=functools.partial(F.mse_loss, reduction=cfg["loss_reduction"]),
        optimizer=lambda params: make_optimizer(cfg, params),
        activation_names=("lstm", "head"),
    )
