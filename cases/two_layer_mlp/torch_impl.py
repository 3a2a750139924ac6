"""two_layer_mlp in PyTorch: the seed's "Autograd" program.

Tensors with ``requires_grad``, ``loss.backward()``, the update under ``torch.no_grad()`` and
``grad.zero_()`` afterwards (forgetting it is the bug the seed warns about). The mode
(eager / jit / compile) is applied to the forward-and-loss function, as the seed scripts
``model`` with ``torch.jit.script``.
"""

import torch

from equiv.records import StepRecord


def forward_loss(x, y, w1, w2):
    y_pred = x.mm(w1).clamp(min=0).mm(w2)
    return (y_pred - y).pow(2).sum()


class Trainer:
    def __init__(self, state, backend):
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.w1 = backend.to_native(state.params["w1"]).requires_grad_(True)
        self.w2 = backend.to_native(state.params["w2"]).requires_grad_(True)
        self.lr = state.config["lr"]
        self.loss_fn = backend.transform(forward_loss)

    def run_step(self):
        loss = self.loss_fn(self.x, self.y, self.w1, self.w2)
        loss.backward()
        self.last = (loss.detach(), self.w1.grad.clone(), self.w2.grad.clone())
        with torch.no_grad():
            self.w1 -= self.lr * self.w1.grad
            self.w2 -= self.lr * self.w2.grad
            self.w1.grad.zero_()
            self.w2.grad.zero_()

    def record(self):
        to_np = self.backend.to_numpy
        loss, g1, g2 = self.last
        return StepRecord(
            loss=to_np(loss)[()],
            grads={"w1": to_np(g1), "w2": to_np(g2)},
            params={"w1": to_np(self.w1), "w2": to_np(self.w2)},
        )


def build(state, backend):
    return Trainer(state, backend)
