"""dynamic_branching in Keras 3: Python picks which output layer the step goes through.

A hidden ``Dense(H, relu, use_bias=False)`` and two heads, ``Dense(D_out, use_bias=False)``
each, for w2a and w2b; the previous loss is read back into Python and an ``if`` picks the head,
the Keras form of the seed's dynamic graph (the same code on all three Keras backends). The
gradient is taken with respect to all three kernels, so the unused head's is zeros (the
backend's autodiff reports no dependence as zeros), and only the used kernels are updated.
Sum-of-squares loss, SGD, explicit dtypes: as two_layer_mlp's Keras code.

``load_state`` (the support base's: the kernels and the optimizer) also takes the state's
``prev_loss``, which picks the next step's head: a port loaded at a later step without it would
branch on its own last loss.
"""

import functools

import keras

from equiv.contract.trainer import StateNotLoadable
from equiv.support import keras as support


def make_layers(state):
    """The hidden layer and the heads by name, built and loaded with the canonical kernels."""
    cfg, dtype = state.config, state.dtype
    hidden = keras.layers.Dense(cfg["H"], activation="relu", use_bias=False, dtype=dtype)
    heads = {
        n: keras.layers.Dense(cfg["D_out"], use_bias=False, dtype=dtype) for n in ("w2a", "w2b")
    }
    hidden.build((None, cfg["D_in"]))
    support.load_dense(hidden, state.params["w1"])
    for name, head in heads.items():
        head.build((None, cfg["H"]))
        support.load_dense(head, state.params[name])
    return hidden, heads


class Trainer(support.Trainer):
    def __init__(self, state, backend):
        cfg = state.config
        self.hidden, self.heads = make_layers(state)
        named = {"w1": self.hidden.kernel, **{n: h.kernel for n, h in self.heads.items()}}
        sgd = functools.partial(keras.optimizers.SGD, learning_rate=cfg["lr"])
        super().__init__(state, backend, named, support.SumSquaredError(state.dtype), sgd)
        self.threshold = cfg["threshold"]
        self.prev_loss = cfg["initial_prev_loss"]

    def load_state(self, resume):
        """The kernels, the optimizer's state and the previous loss the branch reads."""
        if resume.prev_loss is None:
            raise StateNotLoadable(
                "the branch reads the previous loss, and the training state carries none"
            )
        super().load_state(resume)
        self.take_prev_loss(resume.prev_loss)

    def take_prev_loss(self, loss):
        self.prev_loss = float(loss)

    def run_step(self):
        branch = "w2a" if self.prev_loss < self.threshold else "w2b"
        head = self.heads[branch]

        def compute_loss():
            return self.loss_fn(self.y, head(self.hidden(self.x)))

        loss, grads = self.backend.value_and_grad(compute_loss, self.variables)
        grads = dict(zip(self.named, grads, strict=True))
        self.optimizer.apply_gradients([(grads[n], self.named[n]) for n in ("w1", branch)])
        self.prev_loss = float(loss)
        self.last, self.branch = (loss, grads), branch


def build(state, backend):
    return Trainer(state, backend)
