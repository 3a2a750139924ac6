"""parallel_blocks in Keras 3: a custom ``keras.layers.Layer`` inside ``keras.Sequential``.

``ParallelBlock`` holds two ``Dense`` layers and returns ``relu(dense1(x) * dense2(x))`` (the
seed's ``clamp(min=0)``); the model is ``keras.Sequential([Input, ParallelBlock, ParallelBlock,
Dense])``, the loss ``keras.losses.MeanSquaredError`` and the optimizer ``keras.optimizers.Adam``
(keras_sequential's ``make_optimizer``: the case's lr, betas and epsilon, built under the
cell's floatx). As in keras_sequential, Keras 3 has no ``minimize``: the gradient comes from
the backend's autodiff (``backend.value_and_grad``), then ``apply_gradients``. Every layer, the
block's inner ``Dense`` layers included, and the loss get the cell's dtype. Kernels are (in,
out) in Keras as in the canonical state.
"""

import functools

import keras

from cases.keras_sequential.keras_impl import make_optimizer
from equiv.support.keras import Trainer, load_dense


class ParallelBlock(keras.layers.Layer):
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.linear1 = keras.layers.Dense(units, dtype=self.dtype_policy)
        self.linear2 = keras.layers.Dense(units, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.linear1.build(input_shape)
        self.linear2.build(input_shape)

    def call(self, x):
        return keras.ops.relu(self.linear1(x) * self.linear2(x))


def build(state, backend):
    cfg, dtype = state.config, state.dtype
    model = keras.Sequential(
        [
            keras.Input(shape=(cfg["D_in"],), dtype=dtype),
            ParallelBlock(cfg["H"], dtype=dtype),
            ParallelBlock(cfg["H"], dtype=dtype),
            keras.layers.Dense(cfg["D_out"], dtype=dtype),
        ]
    )
    block1, block2, out = model.layers
    dense = {
        "p1_w1": block1.linear1,
        "p1_w2": block1.linear2,
        "p2_w1": block2.linear1,
        "p2_w2": block2.linear2,
        "out_w": out,
    }
    named = {}
    for kernel, layer in dense.items():
        bias = kernel.replace("_w", "_b")
        load_dense(layer, state.params[kernel], state.params[bias])
        named[kernel], named[bias] = layer.kernel, layer.bias
    named = {n: named[n] for n in state.params}  # the case's order: the gradients' order
    loss_fn = keras.losses.MeanSquaredError(dtype=dtype)
    optimizer = functools.partial(make_optimizer, cfg)
    return Trainer(state, backend, named, loss_fn, optimizer, model)
