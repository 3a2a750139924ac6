"""parallel_blocks: the seed's "mix and match custom Modules and Sequential" program.

A custom module, ParallelBlock, computes two affine maps of its input and returns the ReLU of
their elementwise product, clamp(linear1(x) * linear2(x), min=0); the model is
Sequential(ParallelBlock(D_in, H), ParallelBlock(H, H), Linear(H, D_out)); the loss is
``mse_loss`` (mean over every element); the optimizer is Adam with lr 1e-4, as in the seed.
Sizes and steps are the seed's: N=64, D_in=1000, H=100, D_out=10; 500 steps.

Initial parameters are drawn as torch's default ``nn.Linear`` initialisation would draw them:
kernel and bias uniform in +-1/sqrt(fan_in). Kernels are canonical (in, out).

The seed's sizes and learning rate are kept: nothing is degenerate with them. Measured in
float64 at seed 0 (seed 1 alike): the loss falls 0.94 -> 0.36 (step 50) -> 0.047 (step 100) ->
1.2e-8 (step 250) -> 6e-20 (step 500). The product's ReLU is on for 50% of block 1's units and
49% of block 2's at step 0, 43% and 49% at step 500, so both masks matter all along; the masks
come from ``numerics.product_relu_mask`` (a product's kink radius is first order in both
factors). With about 2e5 parameters for 640 targets the model interpolates: the float64 loss
keeps falling to 6e-20 (residuals ~2.5e-10), while float32 levels off at its rounding level,
near 2e-14, from step ~400; the tolerance calibration measures that, as it does for
two_layer_mlp's collapse (equiv.tolerance.policy). The tightest margin of the 500-step run is there:
float64 gradients at step ~350 reach 0.8-0.9 of tolerance on torch (jax 0.78), float32 <= 0.21.

Adam's epsilon is set to torch's 1e-8 on every backend (Keras's default is 1e-7). Keras's Adam
differs from the reference as in keras_sequential_adam, and is explained by the same
declarations (imported, not restated).
"""

from cases.keras_sequential_adam.spec import SPEC as KERAS_SEQUENTIAL_ADAM
from equiv.case import CaseSpec
from equiv.support.draws import regression_data, torch_linear

BLOCKS = ("p1", "p2")
PARAM_NAMES = (
    *(f"{block}_{name}" for block in BLOCKS for name in ("w1", "b1", "w2", "b2")),
    "out_w",
    "out_b",
)

#: keras_sequential_adam's sizes and Adam settings (the seed's), with the seed's N=64
CONFIG = {**KERAS_SEQUENTIAL_ADAM.config, "N": 64}


def layer_sizes(cfg):
    """(fan_in, fan_out) of every affine map, in PARAM_NAMES order."""
    d_in, h, d_out = cfg["D_in"], cfg["H"], cfg["D_out"]
    return [(d_in, h), (d_in, h), (h, h), (h, h), (h, d_out)]


def draw(rng, cfg):
    data = regression_data(rng, cfg)
    arrays = [a for fan_in, fan_out in layer_sizes(cfg) for a in torch_linear(rng, fan_in, fan_out)]
    return data, dict(zip(PARAM_NAMES, arrays, strict=True))


def parallel_blocks_step_flops(cfg):
    """Matmul FLOPs of one training step: per affine map of an (N, in) input to out units,
    2*N*in*out forward and as much for its kernel's gradient, and as much again for the
    gradient of its input, except for the first block's (the data). Elementwise work is left
    out."""
    n = cfg["N"]
    total = 0
    for index, (fan_in, fan_out) in enumerate(layer_sizes(cfg)):
        passes = 2 if index < 2 else 3
        total += passes * 2 * n * fan_in * fan_out
    return total


SPEC = CaseSpec(
    name="parallel_blocks",
    title="Sequential of custom ParallelBlocks, relu(linear1(x) * linear2(x)), MSE, Adam",
    seed_source='"nn: mix and match custom Modules and Sequential" (torch.optim.Adam lr 1e-4)',
    summary="ParallelBlock(D_in, H), ParallelBlock(H, H), Linear(H, D_out); MSE; Adam lr 1e-4",
    default_steps=500,
    config=CONFIG,
    param_names=PARAM_NAMES,
    draw=draw,
    flops_per_step=parallel_blocks_step_flops,
    notes=(
        "parameters drawn as torch's default nn.Linear init (uniform +-1/sqrt(fan_in)).",
        "Adam epsilon 1e-8 on every backend (Keras's default is 1e-7).",
    ),
    explanations=KERAS_SEQUENTIAL_ADAM.explanations,
)
