"""minibatch in Keras 3: keras_sequential's Keras code, one minibatch a step.

``keras.Sequential`` with ``Dense(H, relu)`` and ``Dense(D_out)``, ``MeanSquaredError``, SGD
built under the cell's floatx, gradients by ``backend.value_and_grad`` and
``apply_gradients``: keras_sequential's model and trainer, imported. Keras 3 has no data
pipeline of its own outside ``fit`` (``keras_fit_impl``), and none that is the same on its three
backends, so the batches are slices of the numpy arrays, in order (``equiv.batching``: full
batches, then the partial last one), converted once to the backend's tensors and cycled epoch
after epoch; the loss is the mean over the batch's own elements, as ``MeanSquaredError`` is.
"""

from cases.keras_sequential import keras_impl as keras_sequential
from equiv.batching import cycled_batches
from equiv.support import keras as support


class Trainer(support.Trainer):
    def __init__(self, state, backend, *args):
        super().__init__(state, backend, *args)
        self.batches = cycled_batches(state, backend.to_native)

    def run_step(self):
        self.x, self.y = next(self.batches)  # what ``compute_loss`` reads
        super().run_step()


def build(state, backend):
    return keras_sequential.build(state, backend, Trainer)
