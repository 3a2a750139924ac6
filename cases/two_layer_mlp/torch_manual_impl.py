"""two_layer_mlp in PyTorch with gradients written by hand: the seed's first program
("Fundamental Concepts"), torch tensors and no autograd.

The seed's listing has two typos that would not run (``.sum`` without the call, and
``grad_21 = x.t()mm(grad_h)`` for ``grad_w1 = x.t().mm(grad_h)``); this is the program they
describe. Backend mode ``torch.manual``: nothing is traced, compiled or differentiated by torch.
"""

from cases.two_layer_mlp.torch_impl import Trainer as AutogradTrainer


class Trainer:
    def __init__(self, state, backend):
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.w1 = backend.to_native(state.params["w1"])
        self.w2 = backend.to_native(state.params["w2"])
        self.learning_rate = state.config["lr"]

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
        self.last = (loss, grad_w1, grad_w2)

        w1 -= self.learning_rate * grad_w1
        w2 -= self.learning_rate * grad_w2

    # the same StepRecord as the autograd program's: (loss, grad_w1, grad_w2) and w1, w2
    record = AutogradTrainer.record


def build(state, backend):
    return Trainer(state, backend)
