"""keras_sequential in PyTorch: the seed's nn example with SGD.

``nn.Sequential(Linear, ReLU, Linear)``, ``F.mse_loss`` (mean over every element, as Keras's
MeanSquaredError), ``optim.SGD``, ``zero_grad`` before ``backward``. ``nn.Linear.weight`` is
(out, in): the backend's ``linear_weight`` / ``canonical_kernel`` convert the layout. The mode
is applied to the model (``torch.jit.script(model)``, ``torch.compile(model)``).
"""

import torch
import torch.nn.functional as F

from equiv.support.torch import ModuleTrainer, linear


def make_optimizer(params, cfg):
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(
            params,
            lr=cfg["lr"],
            betas=(cfg.get("beta_1", 0.9), cfg.get("beta_2", 0.999)),
            eps=cfg.get("epsilon", 1e-8),
        )
    return torch.optim.SGD(params, lr=cfg["lr"])


def load(backend, dense1, dense2, p):
    """The canonical w1, b1, w2, b2 copied into two ``nn.Linear`` layers (``linear_weight``
    transposes a canonical (in, out) kernel to an (out, in) weight); their names for record."""
    with torch.no_grad():
        dense1.weight.copy_(backend.linear_weight(p["w1"]))
        dense1.bias.copy_(backend.to_native(p["b1"]))
        dense2.weight.copy_(backend.linear_weight(p["w2"]))
        dense2.bias.copy_(backend.to_native(p["b2"]))
    return {**linear(dense1, "w1", "b1"), **linear(dense2, "w2", "b2")}


class Trainer(ModuleTrainer):
    def __init__(self, state, backend):
        cfg = state.config
        model = torch.nn.Sequential(
            torch.nn.Linear(cfg["D_in"], cfg["H"]),
            torch.nn.ReLU(),
            torch.nn.Linear(cfg["H"], cfg["D_out"]),
        ).to(getattr(torch, state.dtype))
        super().__init__(state, backend, load(backend, model[0], model[2], state.params))
        self.model = backend.transform(model)
        self.optimizer = make_optimizer(model.parameters(), cfg)

    def run_step(self):
        self.optimizer.zero_grad()
        loss = F.mse_loss(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        self.loss = loss.detach()


def build(state, backend):
    return Trainer(state, backend)
