"""keras_sequential_adam: keras_sequential's code; Adam is chosen from the case config."""

from cases.keras_sequential.keras_impl import build

__all__ = ["build"]
