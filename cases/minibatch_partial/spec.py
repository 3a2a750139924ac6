"""minibatch_partial: minibatch with N=60, so every epoch ends with a partial batch.

The same program, data pipelines and implementations as ``minibatch`` (its files re-export
minibatch's), with 60 samples in batches of 8: 7 full batches and a last one of 4, as
``DataLoader(drop_last=False)``, ``tf.data.Dataset.batch`` and Keras's ``fit`` all keep it.
The last batch's loss is the mean over its own 4 x D_out elements, not over 8 x D_out. 20
epochs of 8 steps: 160 steps. What it catches, and ``minibatch`` cannot: a pipeline that drops
the partial batch (the trajectory moves to the next epoch's first batch at step 7), a loss
averaged over the nominal batch size (step 7's gradients are half as large), and a compiled
step that mishandles the second shape (torch.compile, tf.function, XLA and jax.jit each trace
the step a second time for it; once, not every epoch).

lr 1e-2 as in minibatch: seed 0, float64, the epoch-mean loss falls from 1.273 in epoch 1 to
0.285 in epoch 20; no hidden unit dies.
"""

from dataclasses import replace

from cases.minibatch.spec import CONFIG as MINIBATCH_CONFIG
from cases.minibatch.spec import SPEC as MINIBATCH
from cases.minibatch.spec import default_steps

CONFIG = {**MINIBATCH_CONFIG, "N": 60}

SPEC = replace(
    MINIBATCH,
    name="minibatch_partial",
    title="TwoLayerNet on minibatches of 8 of 60: a partial last batch of 4, MSE, SGD",
    seed_source='"PyTorch: DataLoaders", with N=60 (DataLoader keeps the partial last batch)',
    summary="minibatch with N=60: 7 batches of 8 and one of 4 an epoch, 20 epochs; SGD lr 1e-2",
    default_steps=default_steps(CONFIG),
    config=CONFIG,
    notes=(
        "the last batch of each epoch has 4 samples; its mse is over its own 4 x D_out.",
        "compiled steps trace a second time for the partial batch's shape, once.",
    ),
)
