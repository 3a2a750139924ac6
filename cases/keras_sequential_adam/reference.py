"""Reference for keras_sequential_adam: keras_sequential's forward and backward; the Adam
update itself is equiv.optim.Adam (or AdamEpsilonHat for the declared Keras variant)."""

from cases.keras_sequential.reference import forward_backward

__all__ = ["forward_backward"]
