"""minibatch_partial: minibatch's code; the batches come from the case config."""

from cases.minibatch.torch_impl import build

__all__ = ["build"]
