"""minibatch_partial through ``model.fit``: minibatch's code (fit keeps the partial batch)."""

from cases.minibatch.keras_fit_impl import build

__all__ = ["build"]
