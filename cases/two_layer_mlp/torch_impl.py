"""two_layer_mlp in PyTorch: the seed's "Autograd" program.

Tensors with ``requires_grad``, ``loss.backward()``, the update under ``torch.no_grad()`` and
``grad.zero_()`` afterwards (forgetting it is the bug the seed warns about). The mode
(eager / jit / compile) is applied to the forward-and-loss function, as the seed scripts
``model`` with ``torch.jit.script``. sigmoid_custom_op trains the same way on its own loss.
"""

import torch

from equiv.support.torch import TensorTrainer


def forward_loss(x, y, w1, w2):
    y_pred = x.mm(w1).clamp(min=0).mm(w2)
    return (y_pred - y).pow(2).sum()


class Trainer(TensorTrainer):
    """``loss_fn(x, y, w1, w2)`` is the forward pass and loss (this case's, transformed by the
    mode, unless given)."""

    def __init__(self, state, backend, loss_fn=None):
        super().__init__(state, backend)
        self.w1, self.w2 = self.w["w1"], self.w["w2"]
        self.loss_fn = backend.transform(forward_loss) if loss_fn is None else loss_fn

    def run_step(self):
        loss = self.loss_fn(self.x, self.y, self.w1, self.w2)
        loss.backward()
        self.last = (loss.detach(), {"w1": self.w1.grad.clone(), "w2": self.w2.grad.clone()})
        with torch.no_grad():
            self.w1 -= self.lr * self.w1.grad
            self.w2 -= self.lr * self.w2.grad
            self.w1.grad.zero_()
            self.w2.grad.zero_()


def build(state, backend):
    return Trainer(state, backend)
