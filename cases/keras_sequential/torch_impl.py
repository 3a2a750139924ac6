"""keras_sequential in PyTorch: the seed's nn example with SGD.

``nn.Sequential(Linear, ReLU, Linear)``, ``F.mse_loss`` (mean over every element, as Keras's
MeanSquaredError), ``optim.SGD``, ``zero_grad`` before ``backward``. ``nn.Linear.weight`` is
(out, in): the backend's ``linear_weight`` / ``canonical_kernel`` convert the layout. The mode
is applied to the model (``torch.jit.script(model)``, ``torch.compile(model)``).
"""

import torch
import torch.nn.functional as F

from equiv.records import StepRecord


def make_optimizer(params, cfg):
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(
            params,
            lr=cfg["lr"],
            betas=(cfg.get("beta_1", 0.9), cfg.get("beta_2", 0.999)),
            eps=cfg.get("epsilon", 1e-8),
        )
    return torch.optim.SGD(params, lr=cfg["lr"])


class Trainer:
    def __init__(self, state, backend):
        self.backend = backend
        cfg, p = state.config, state.params
        dtype = getattr(torch, state.dtype)
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        model = torch.nn.Sequential(
            torch.nn.Linear(cfg["D_in"], cfg["H"]),
            torch.nn.ReLU(),
            torch.nn.Linear(cfg["H"], cfg["D_out"]),
        ).to(dtype)
        self.dense1, self.dense2 = model[0], model[2]
        with torch.no_grad():
            self.dense1.weight.copy_(backend.linear_weight(p["w1"]))
            self.dense1.bias.copy_(backend.to_native(p["b1"]))
            self.dense2.weight.copy_(backend.linear_weight(p["w2"]))
            self.dense2.bias.copy_(backend.to_native(p["b2"]))
        self.model = backend.transform(model)
        self.optimizer = make_optimizer(model.parameters(), cfg)

    def run_step(self):
        self.optimizer.zero_grad()
        loss = F.mse_loss(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        self.loss = loss.detach()

    def record(self):
        b = self.backend
        d1, d2 = self.dense1, self.dense2
        return StepRecord(
            loss=b.to_numpy(self.loss)[()],
            grads={
                "w1": b.canonical_kernel(d1.weight.grad),
                "b1": b.to_numpy(d1.bias.grad),
                "w2": b.canonical_kernel(d2.weight.grad),
                "b2": b.to_numpy(d2.bias.grad),
            },
            params={
                "w1": b.canonical_kernel(d1.weight),
                "b1": b.to_numpy(d1.bias),
                "w2": b.canonical_kernel(d2.weight),
                "b2": b.to_numpy(d2.bias),
            },
        )


def build(state, backend):
    return Trainer(state, backend)
