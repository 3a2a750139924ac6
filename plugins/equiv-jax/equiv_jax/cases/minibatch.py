"""minibatch in JAX: keras_sequential's JAX code, one minibatch a step.

The model, loss (``jnp.mean`` over the batch's own elements) and SGD are keras_sequential's,
imported. JAX has no data pipeline of its own: the batches are slices of the arrays, in order
(``equiv.batching.batch_slices``: full batches, then the partial last one), made once and
cycled epoch after epoch. Under ``jax.jit`` the step is traced once per batch shape: once for
``minibatch``, twice for ``minibatch_partial`` (its last batch of 4).
"""

from equiv.batching import cycled_batches

from equiv_jax.cases import keras_sequential


class Trainer(keras_sequential.Trainer):
    def __init__(self, state, backend):
        super().__init__(state, backend)
        self.batches = cycled_batches(state, backend.to_native)

    def run_step(self):
        self.x, self.y = next(self.batches)  # what the step is called with
        super().run_step()


def build(state, backend):
    return Trainer(state, backend)
