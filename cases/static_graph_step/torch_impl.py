"""static_graph_step in PyTorch: the whole step as one function, built once and replayed.

One function does it all: choose w2 from the previous loss (a tensor, so the decision is data
inside the graph), forward, loss, ``torch.autograd.grad``, and the update. How the branch is
written is the one thing each mode needs in its own idiom:
- eager (the control) and ``torch.jit.script``: an ``if`` on the tensor; TorchScript compiles
  it into the graph as a real conditional (``prim::If``);
- ``torch.compile``: ``torch.cond``, since a Python ``if`` on a tensor would break the graph
  and leave the branch outside the compiled code.
The previous loss stays a tensor between calls: a Python float argument would make a compiler
specialise (retrace) on every new value.
"""

import torch

from equiv.support.torch import TensorTrainer


def train_step(x, y, w1, w2a, w2b, prev_loss, lr: float, threshold: float):
    use_a = prev_loss < threshold
    w2 = w2a if bool(use_a) else w2b
    loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
    grads = torch.autograd.grad([loss], [w1, w2a, w2b], allow_unused=True)
    g1 = grads[0]
    g2a = grads[1]
    g2b = grads[2]
    assert g1 is not None
    if g2a is None:
        g2a = torch.zeros_like(w2a)
    if g2b is None:
        g2b = torch.zeros_like(w2b)
    with torch.no_grad():
        w1.sub_(lr * g1)
        w2a.sub_(lr * g2a)
        w2b.sub_(lr * g2b)
    return loss.detach(), g1, g2a, g2b, use_a


def _mm_a(h, a, b):
    return h.mm(a)


def _mm_b(h, a, b):
    return h.mm(b)


def train_step_cond(x, y, w1, w2a, w2b, prev_loss, lr: float, threshold: float):
    with torch.enable_grad():
        h = x.mm(w1).clamp(min=0)
        use_a = prev_loss < threshold
        y_pred = torch.cond(use_a, _mm_a, _mm_b, (h, w2a, w2b))
        loss = (y_pred - y).pow(2).sum()
        g1, g2a, g2b = torch.autograd.grad(loss, [w1, w2a, w2b])
    with torch.no_grad():
        w1.sub_(lr * g1)
        w2a.sub_(lr * g2a)
        w2b.sub_(lr * g2b)
    return loss.detach(), g1, g2a, g2b, use_a


class Trainer(TensorTrainer):
    def __init__(self, state, backend):
        super().__init__(state, backend)
        cfg = state.config
        self.threshold = cfg["threshold"]
        self.prev_loss = torch.tensor(cfg["initial_prev_loss"], dtype=self.x.dtype)
        step = train_step_cond if backend.mode == "compile" else train_step
        self.step = backend.transform(step)

    def run_step(self):
        w1, w2a, w2b = self.w.values()
        out = self.step(self.x, self.y, w1, w2a, w2b, self.prev_loss, self.lr, self.threshold)
        loss, g1, g2a, g2b, self.use_a = out
        self.prev_loss = loss
        self.last = (loss, {"w1": g1, "w2a": g2a, "w2b": g2b})

    @property
    def branch(self):
        """Read from the step's tensor when recorded, not in the timed step."""
        return "w2a" if bool(self.use_a) else "w2b"


def build(state, backend):
    return Trainer(state, backend)
