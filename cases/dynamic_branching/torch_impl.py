"""dynamic_branching in PyTorch: the seed's "Dynamic Computation Graphs" program.

Plain Python decides which w2 to use from ``prev_loss = loss.item()``; autograd records only
the path taken, so the unused w2 gets no gradient (recorded as zeros, and its update is a
no-op). In jit and compile modes the forward-and-loss function is scripted or compiled and the
branch stays in Python, which is what "dynamic" means; static_graph_step puts it inside.
"""

import torch

from equiv.support.torch import TensorTrainer


def forward_loss(x, y, w1, w2):
    y_pred = x.mm(w1).clamp(min=0).mm(w2)
    return (y_pred - y).pow(2).sum()


class Trainer(TensorTrainer):
    def __init__(self, state, backend):
        super().__init__(state, backend)
        self.threshold = state.config["threshold"]
        self.prev_loss = state.config["initial_prev_loss"]
        self.loss_fn = backend.transform(forward_loss)

    def run_step(self):
        branch = "w2a" if self.prev_loss < self.threshold else "w2b"
        w1, w2 = self.w["w1"], self.w[branch]
        loss = self.loss_fn(self.x, self.y, w1, w2)
        loss.backward()
        self.prev_loss = loss.item()
        grads = {
            n: torch.zeros_like(p) if p.grad is None else p.grad.clone() for n, p in self.w.items()
        }
        self.last, self.branch = (loss.detach(), grads), branch
        with torch.no_grad():
            for p in (w1, w2):
                p -= self.lr * p.grad
                p.grad.zero_()


def build(state, backend):
    return Trainer(state, backend)
