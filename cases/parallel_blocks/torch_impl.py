"""parallel_blocks in PyTorch: the seed's program, a custom ``nn.Module`` inside ``nn.Sequential``.

``ParallelBlock`` is the seed's module as written (two ``nn.Linear``, the product clamped at 0);
the model is ``nn.Sequential(ParallelBlock, ParallelBlock, Linear)``, the loss ``F.mse_loss``
and the optimizer ``torch.optim.Adam`` with the case's lr, betas and eps (keras_sequential's
``make_optimizer``). The mode is applied to the model: ``torch.jit.script`` compiles the custom
module's ``forward`` from its source (its argument is a Tensor by default, so it needs no
annotation), ``torch.compile`` traces it. ``nn.Linear.weight`` is (out, in): the backend's
``linear_weight`` / ``canonical_kernel`` convert the layout.
"""

import torch

from cases.keras_sequential.torch_impl import Trainer as SequentialTrainer
from cases.keras_sequential.torch_impl import make_optimizer
from equiv.records import StepRecord


class ParallelBlock(torch.nn.Module):
    def __init__(self, D_in, D_out):
        super().__init__()
        self.linear1 = torch.nn.Linear(D_in, D_out)
        self.linear2 = torch.nn.Linear(D_in, D_out)

    def forward(self, x):
        h1 = self.linear1(x)
        h2 = self.linear2(x)
        return (h1 * h2).clamp(min=0)


class Trainer(SequentialTrainer):
    """keras_sequential's trainer (its step: zero_grad, mse_loss, backward, step) over this
    model, with its own record of the ten parameters."""

    def __init__(self, state, backend):
        self.backend = backend
        cfg, p = state.config, state.params
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        model = torch.nn.Sequential(
            ParallelBlock(cfg["D_in"], cfg["H"]),
            ParallelBlock(cfg["H"], cfg["H"]),
            torch.nn.Linear(cfg["H"], cfg["D_out"]),
        ).to(getattr(torch, state.dtype))
        block1, block2, out = model
        layers = {
            "p1": (block1.linear1, block1.linear2),
            "p2": (block2.linear1, block2.linear2),
        }
        #: canonical name -> (parameter, whether it is an (out, in) weight)
        self.named = {"out_w": (out.weight, True), "out_b": (out.bias, False)}
        for prefix, (linear1, linear2) in layers.items():
            for index, linear in ((1, linear1), (2, linear2)):
                self.named[f"{prefix}_w{index}"] = (linear.weight, True)
                self.named[f"{prefix}_b{index}"] = (linear.bias, False)
        with torch.no_grad():
            for name, (param, is_weight) in self.named.items():
                load = backend.linear_weight if is_weight else backend.to_native
                param.copy_(load(p[name]))
        self.model = backend.transform(model)
        self.optimizer = make_optimizer(model.parameters(), cfg)

    def canonical(self, value, is_weight):
        b = self.backend
        return b.canonical_kernel(value) if is_weight else b.to_numpy(value)

    def record(self):
        return StepRecord(
            loss=self.backend.to_numpy(self.loss)[()],
            grads={n: self.canonical(p.grad, w) for n, (p, w) in self.named.items()},
            params={n: self.canonical(p, w) for n, (p, w) in self.named.items()},
        )


def build(state, backend):
    return Trainer(state, backend)
