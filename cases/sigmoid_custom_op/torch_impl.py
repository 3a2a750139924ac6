"""sigmoid_custom_op in PyTorch: the seed's "Improvement", a ``torch.autograd.Function``.

The Function saves its output and its backward is the hand-written grad_y * y * (1 - y).
TorchScript cannot call an ``autograd.Function``, so in ``torch.jit`` mode (as one would in
TorchScript) the Function's forward and backward kernels and the layers around it are the
scripted parts, and the Function glues them; ``torch.compile`` traces the Function whole.
"""

import torch

from equiv.records import StepRecord


def sigmoid_forward(h):
    return 1.0 / (1.0 + (-h).exp())


def sigmoid_backward(grad_y, y):
    return grad_y * y * (1.0 - y)


def hidden(x, w1):
    return x.mm(w1)


def output_loss(s, w2, y):
    return (s.mm(w2) - y).pow(2).sum()


def make_sigmoid(forward_kernel, backward_kernel):
    class Sigmoid(torch.autograd.Function):
        @staticmethod
        def forward(ctx, h):
            y = forward_kernel(h)
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, grad_y):
            (y,) = ctx.saved_tensors
            return backward_kernel(grad_y, y)

    return Sigmoid.apply


class Trainer:
    def __init__(self, state, backend):
        self.backend = backend
        self.x = backend.to_native(state.data["x"])
        self.y = backend.to_native(state.data["y"])
        self.w1 = backend.to_native(state.params["w1"]).requires_grad_(True)
        self.w2 = backend.to_native(state.params["w2"]).requires_grad_(True)
        self.lr = state.config["lr"]
        if backend.mode == "jit":
            sigmoid = make_sigmoid(
                backend.transform(sigmoid_forward), backend.transform(sigmoid_backward)
            )
            hidden_fn, loss_fn = backend.transform(hidden), backend.transform(output_loss)
            self.loss_fn = lambda x, y, w1, w2: loss_fn(sigmoid(hidden_fn(x, w1)), w2, y)
        else:
            sigmoid = make_sigmoid(sigmoid_forward, sigmoid_backward)

            def forward_loss(x, y, w1, w2):
                return output_loss(sigmoid(hidden(x, w1)), w2, y)

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
