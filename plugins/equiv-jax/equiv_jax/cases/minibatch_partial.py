"""minibatch_partial in JAX: minibatch's code; the batches come from the case config."""

from equiv_jax.cases.minibatch import build

__all__ = ["build"]
