"""minibatch: the seed's "DataLoaders" program: TwoLayerNet trained on minibatches.

``TwoLayerNet`` (Linear, clamp(min=0), Linear, with biases), ``F.mse_loss`` (the mean over
every element of the batch), SGD lr 1e-2; N=64 samples in batches of 8, no shuffling, 20
epochs: one step is one minibatch, so 8 steps an epoch and 160 steps in all. Sizes are the
seed's: D_in=1000, H=100, D_out=10.

Each framework takes its batches from its own data pipeline (``DataLoader``, ``tf.data``, a
one-shot iterator inside a TF1 graph, slices for Keras and JAX), in order, repeating epochs
without end; the reference trains step t on batch ``t % 8`` (``equiv.batching``). A pipeline
that shuffles, drops or reorders batches diverges at the first step whose batch differs.

Parameters are canonical (in, out), drawn as torch's default ``nn.Linear`` initialisation
(kernel and bias uniform in +-1/sqrt(fan_in)) but from the harness's generator; x and y are
standard normal. The seed's lr 1e-2 is kept: with the mean over 8 x 10 elements it moves w1's
entries (~1.6e-2 in magnitude) by ~1e-4 a step, tens of thousands of float32 ulps, and the loss
falls steadily, without blowing up or dying: seed 0, float64, the epoch-mean loss falls from
1.105 in epoch 1 to 0.271 in epoch 20 (the batch loss at step 159 is 0.251), and after the 160
steps 38.5% of the hidden units' pre-activations over the data are positive, none dead.
"""

from cases.keras_sequential.spec import KERAS_JAX_MEAN_IN_FLOAT32
from equiv.batching import batches_per_epoch
from equiv.case import CaseSpec
from equiv.flops import two_layer_step_flops
from equiv.support.draws import regression_data, torch_linear

CONFIG = {
    "N": 64,
    "D_in": 1000,
    "H": 100,
    "D_out": 10,
    "lr": 1e-2,
    "optimizer": "sgd",
    "batch_size": 8,
    "epochs": 20,
}


def draw(rng, cfg):
    data = regression_data(rng, cfg)
    w1, b1 = torch_linear(rng, cfg["D_in"], cfg["H"])
    w2, b2 = torch_linear(rng, cfg["H"], cfg["D_out"])
    return data, {"w1": w1, "b1": b1, "w2": w2, "b2": b2}


def minibatch_step_flops(cfg):
    """The mean matmul FLOPs of a step over an epoch: an epoch's steps see all N samples."""
    return round(two_layer_step_flops(cfg) / batches_per_epoch(cfg))


def default_steps(cfg):
    return cfg["epochs"] * batches_per_epoch(cfg)


SPEC = CaseSpec(
    name="minibatch",
    title="TwoLayerNet on DataLoader minibatches (batch 8 of 64), MSE, SGD",
    seed_source='"PyTorch: DataLoaders" (TwoLayerNet, TensorDataset, DataLoader(batch_size=8))',
    summary="TwoLayerNet; one step per minibatch of 8, 8 an epoch, 20 epochs; mse; SGD lr 1e-2",
    default_steps=default_steps(CONFIG),
    config=CONFIG,
    param_names=("w1", "b1", "w2", "b2"),
    draw=draw,
    flops_per_step=minibatch_step_flops,
    notes=(
        "one step is one minibatch, in order, no shuffling; epochs repeat without end.",
        "each framework batches with its own pipeline (DataLoader, tf.data, slices).",
        "parameters drawn as torch's default nn.Linear init, from the harness's generator.",
    ),
    explanations=(KERAS_JAX_MEAN_IN_FLOAT32,),
)
