"""minibatch in PyTorch: the seed's "DataLoaders" program.

The seed's ``TwoLayerNet`` (an ``nn.Module`` subclass: ``linear2(linear1(x).clamp(min=0))``),
``DataLoader(TensorDataset(x, y), batch_size=...)`` with its defaults (no shuffling, the partial
last batch kept), ``F.mse_loss`` (the mean over the batch's own elements), ``optim.SGD``. One
``run_step`` trains on the loader's next batch; the loader is iterated epoch after epoch without
end. ``nn.Linear.weight`` is (out, in): keras_sequential's ``load`` converts (``linear_weight``),
and ``record`` back (``canonical_kernel``). The mode is applied to the model
(``torch.jit.script(model)``, ``torch.compile(model)``).

A partial last batch (minibatch_partial) has another shape: ``torch.compile`` is left to
recompile once for it. Dynamo's automatic dynamic shapes then compile the second graph with a
symbolic batch size, so the full batches keep hitting the first, static graph and the partial
one the second: two compilations in all, however many epochs (no ``mark_dynamic``, so the full
batches run the same static kernels as in ``minibatch``).
"""

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from cases.keras_sequential.torch_impl import load
from equiv.support.torch import ModuleTrainer


class TwoLayerNet(torch.nn.Module):
    def __init__(self, D_in, H, D_out):
        super().__init__()
        self.linear1 = torch.nn.Linear(D_in, H)
        self.linear2 = torch.nn.Linear(H, D_out)

    def forward(self, x):
        return self.linear2(self.linear1(x).clamp(min=0))


def epochs(loader):
    """The loader's batches, epoch after epoch, for ever."""
    while True:
        yield from loader


class Trainer(ModuleTrainer):
    def __init__(self, state, backend):
        cfg = state.config
        model = TwoLayerNet(cfg["D_in"], cfg["H"], cfg["D_out"]).to(getattr(torch, state.dtype))
        super().__init__(state, backend, load(backend, model.linear1, model.linear2, state.params))
        x, y = self.x, self.y  # all of the data: the loader batches it
        loader = DataLoader(TensorDataset(x, y), batch_size=cfg["batch_size"])
        self.batches = epochs(loader)
        self.model = backend.transform(model)
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg["lr"])

    def run_step(self):
        x_batch, y_batch = next(self.batches)
        # The seed zeroes after step(); here before backward, so that record() can read them.
        self.optimizer.zero_grad()
        loss = F.mse_loss(self.model(x_batch), y_batch)
        loss.backward()
        self.optimizer.step()
        self.loss = loss.detach()


def build(state, backend):
    return Trainer(state, backend)
