"""parallel_blocks in PyTorch: the seed's program, a custom ``nn.Module`` inside ``nn.Sequential``.

``ParallelBlock`` is the seed's module as written (two ``nn.Linear``, the product clamped at 0);
the model is ``nn.Sequential(ParallelBlock, ParallelBlock, Linear)``, the loss ``F.mse_loss``
and the optimizer ``torch.optim.Adam`` with the case's lr, betas and eps (keras_sequential's
``make_optimizer``). The mode is applied to the model: ``torch.jit.script`` compiles the custom
module's ``forward`` from its source (its argument is a Tensor by default, so it needs no
annotation), ``torch.compile`` traces it. ``nn.Linear.weight`` is (out, in): ``load_linear``
and ``record`` convert the layout (``linear_weight``, ``canonical_kernel``).
"""

import torch

from cases.keras_sequential.torch_impl import Trainer as SequentialTrainer
from cases.keras_sequential.torch_impl import make_optimizer
from equiv.support.torch import ModuleTrainer, linear, load_linear


class ParallelBlock(torch.nn.Module):
    def __init__(self, D_in, D_out):
        super().__init__()
        self.linear1 = torch.nn.Linear(D_in, D_out)
        self.linear2 = torch.nn.Linear(D_in, D_out)

    def forward(self, x):
        h1 = self.linear1(x)
        h2 = self.linear2(x)
        return (h1 * h2).clamp(min=0)


class Trainer(ModuleTrainer):
    def __init__(self, state, backend):
        cfg = state.config
        model = torch.nn.Sequential(
            ParallelBlock(cfg["D_in"], cfg["H"]),
            ParallelBlock(cfg["H"], cfg["H"]),
            torch.nn.Linear(cfg["H"], cfg["D_out"]),
        ).to(getattr(torch, state.dtype))
        block1, block2, out = model
        named = {
            **linear(block1.linear1, "p1_w1", "p1_b1"),
            **linear(block1.linear2, "p1_w2", "p1_b2"),
            **linear(block2.linear1, "p2_w1", "p2_b1"),
            **linear(block2.linear2, "p2_w2", "p2_b2"),
            **linear(out, "out_w", "out_b"),
        }
        load_linear(backend, named, state.params)
        super().__init__(state, backend, named)
        self.model = backend.transform(model)
        self.optimizer = make_optimizer(model.parameters(), cfg)

    #: keras_sequential's step: zero_grad, mse_loss, backward, optimizer.step
    run_step = SequentialTrainer.run_step


def build(state, backend):
    return Trainer(state, backend)
