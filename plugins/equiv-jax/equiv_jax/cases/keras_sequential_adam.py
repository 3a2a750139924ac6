"""keras_sequential_adam in JAX: keras_sequential's code; the case config selects Adam."""

from equiv_jax.cases.keras_sequential import build

__all__ = ["build"]
