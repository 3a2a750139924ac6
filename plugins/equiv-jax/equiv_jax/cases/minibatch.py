"""minibatch in JAX: keras_sequential's JAX code, one minibatch a step.

The model, loss (``jnp.mean`` over the batch's own elements) and SGD are keras_sequential's,
imported. JAX has no data pipeline of its own: the batches are slices of the arrays, in order
(``equiv.batching.batch_slices``: full batches, then the partial last one), made once and
cycled epoch after epoch. Under ``jax.jit`` the step is traced once per batch shape: once for
``minibatch``, twice for ``minibatch_partial`` (its last batch of 4).
"""

import itertools

from equiv.batching import batch_slices

from equiv_jax.cases import keras_sequential


class Trainer(keras_sequential.Trainer):
    def __init__(self, state, backend):
        super().__init__(state, backend)
        x, y = state.data["x"], state.data["y"]
        slices = batch_slices(len(x), state.config["batch_size"])
        to_native = backend.to_native
        self.batches = itertools.cycle([(to_native(x[s]), to_native(y[s])) for s in slices])

    def run_step(self):
        self.x, self.y = next(self.batches)  # what the step is called with
        super().run_step()


def build(state, backend):
    return Trainer(state, backend)
