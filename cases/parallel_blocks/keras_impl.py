"""parallel_blocks in Keras 3: a custom ``keras.layers.Layer`` inside ``keras.Sequential``.

``ParallelBlock`` holds two ``Dense`` layers and returns ``relu(linear1(x) * linear2(x))`` (the
seed's ``clamp(min=0)``); the model is ``keras.Sequential([Input, ParallelBlock, ParallelBlock,
Dense])``, the loss ``keras.losses.MeanSquaredError`` and the optimizer ``keras.optimizers.Adam``
(keras_sequential's ``make_optimizer``: the case's lr, betas and epsilon). Every layer, the
block's inner ``Dense`` layers included, and the loss get the cell's dtype. The step is
``equiv.support.keras_port``'s (Keras 3 has no ``minimize``). A block's variables are its inner
layers' (``layer.weights`` takes a layer's sub-layers in the order they were set), so its layout
is two ``Dense`` layouts composed under the attributes' names, ``p1/linear1/kernel``.
"""

import functools

import keras

from cases.keras_sequential.keras_impl import make_optimizer
from equiv import layouts
from equiv.support.keras_port import port


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


def block_layout(fan_in, units):
    dense = {n: layouts.keras_dense(fan_in, units) for n in ("linear1", "linear2")}
    return layouts.compose(f"ParallelBlock({units}) on {fan_in}", dense, framework_sep="/")


def layout(cfg):
    """Blocks ``p1``, ``p2`` and the Dense ``out``, under the case's names (``p1_w1``)."""
    d_in, h = cfg["D_in"], cfg["H"]
    blocks = {"p1": block_layout(d_in, h), "p2": block_layout(h, h)}
    model = layouts.compose(
        "parallel_blocks",
        {**blocks, "out": layouts.keras_dense(h, cfg["D_out"])},
        framework_sep="/",
    )
    short = {"kernel": "w", "bias": "b"}
    names = {
        f"{p}.linear{i}.{t}": f"{p}_{short[t]}{i}" for p in blocks for i in (1, 2) for t in short
    }
    return model.named({**names, "out.kernel": "out_w", "out.bias": "out_b"})


def build(state, backend):
    cfg, dtype = state.config, state.dtype
    model = keras.Sequential(
        [
            keras.Input(shape=(cfg["D_in"],), dtype=dtype),
            ParallelBlock(cfg["H"], dtype=dtype, name="p1"),
            ParallelBlock(cfg["H"], dtype=dtype, name="p2"),
            keras.layers.Dense(cfg["D_out"], dtype=dtype, name="out"),
        ]
    )
    loss = keras.losses.MeanSquaredError(dtype=dtype)
    optimizer = functools.partial(make_optimizer, cfg)
    return port(state, backend, model, layout=layout(cfg), loss=loss, optimizer=optimizer)
