"""sigmoid_custom_op in PyTorch: the seed's "Improvement", a ``torch.autograd.Function``.

The Function saves its output and its backward is the hand-written grad_y * y * (1 - y).
TorchScript cannot call an ``autograd.Function``, so in ``torch.jit`` mode (as one would in
TorchScript) the Function's forward and backward kernels and the layers around it are the
scripted parts, and the Function glues them; ``torch.compile`` traces the Function whole.
The training step is two_layer_mlp's (``backward``, the update, ``zero_()``) on this loss.
"""

import torch

from cases.two_layer_mlp.torch_impl import Trainer


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


def make_loss_fn(backend):
    """``loss_fn(x, y, w1, w2)``: the forward pass through the custom op, and the loss, in the
    backend's mode."""
    if backend.mode == "jit":
        sigmoid = make_sigmoid(
            backend.transform(sigmoid_forward), backend.transform(sigmoid_backward)
        )
        hidden_fn, loss_fn = backend.transform(hidden), backend.transform(output_loss)
        return lambda x, y, w1, w2: loss_fn(sigmoid(hidden_fn(x, w1)), w2, y)
    sigmoid = make_sigmoid(sigmoid_forward, sigmoid_backward)

    def forward_loss(x, y, w1, w2):
        return output_loss(sigmoid(hidden(x, w1)), w2, y)

    return backend.transform(forward_loss)


def build(state, backend):
    return Trainer(state, backend, make_loss_fn(backend))
