"""two_layer_mlp in PyTorch with gradients written by hand: the seed's first program
("Fundamental Concepts"), torch tensors and no autograd.

The seed's listing has two typos that would not run (``.sum`` without the call, and
``grad_21 = x.t()mm(grad_h)`` for ``grad_w1 = x.t().mm(grad_h)``); this is the program they
describe. Backend mode ``torch.manual``: nothing is traced, compiled or differentiated by torch.
"""

from equiv.support.torch import TensorTrainer


class Trainer(TensorTrainer):
    def __init__(self, state, backend):
        super().__init__(state, backend, requires_grad=False)
        self.w1, self.w2 = self.w["w1"], self.w["w2"]

    def run_step(self):
        x, y, w1, w2 = self.x, self.y, self.w1, self.w2
        h = x.mm(w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        loss = (y_pred - y).pow(2).sum()

        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h_relu = grad_y_pred.mm(w2.t())
        grad_h = grad_h_relu.clone()
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)
        self.last = (loss, {"w1": grad_w1, "w2": grad_w2})

        w1 -= self.lr * grad_w1
        w2 -= self.lr * grad_w2


def build(state, backend):
    return Trainer(state, backend)
