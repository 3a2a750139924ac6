"""Reference for minibatch: keras_sequential's Dense-relu-Dense with biases and its mean
squared error, for one minibatch. ``data`` is the step's batch (``equiv.batching``: the
reference trains step t on batch ``t % batches_per_epoch``), so the mean is over that batch's
own elements, 4 x D_out for minibatch_partial's last batch."""

from cases.keras_sequential.reference import forward_backward

__all__ = ["forward_backward"]
