"""keras_sequential: the seed's "Keras: High-level API" program.

Dense(H, relu) then Dense(D_out), with biases; mean squared error over every element; SGD.
Sizes are the seed's: N=16, D_in=1000, H=100, D_out=10; 1000 steps as in the seed.

Two deliberate changes from the seed, both so that bugs cannot hide:
- learning rate 1e-3, not 1e-6. With MSE averaged over 160 elements the gradients are ~1e-2,
  so lr 1e-6 gives updates ~1e-8, a couple of float32 ulps of a ~5e-2 weight (ulp ~4e-9), and
  most of them round away: a broken update would be invisible in float32. At 1e-3 every step
  moves a weight by ~1e-5, about a thousand ulps, and the loss still falls steadily over the
  1000 steps (2.7 -> 1e-3) instead of collapsing to rounding noise as it does at 1e-2.
- biases start non-zero (N(0, 0.1)), not at Keras's zeros, so that a bias that is never loaded
  or is dropped changes the loss from step 0.
Kernels are canonical (in, out), drawn Glorot-uniform as Keras's default initializer would.
"""

from equiv.case import CaseSpec, Explanation
from equiv.flops import two_layer_step_flops
from equiv.support.draws import glorot_uniform, regression_data

CONFIG = {
    "N": 16,
    "D_in": 1000,
    "H": 100,
    "D_out": 10,
    "lr": 1e-3,
    "optimizer": "sgd",
    "loss_reduction": "mean",
}


def draw(rng, cfg):
    d_in, h, d_out = cfg["D_in"], cfg["H"], cfg["D_out"]
    data = regression_data(rng, cfg)
    params = {
        "w1": glorot_uniform(rng, d_in, h),
        "b1": 0.1 * rng.standard_normal(h),
        "w2": glorot_uniform(rng, h, d_out),
        "b2": 0.1 * rng.standard_normal(d_out),
    }
    return data, params


#: Keras 3's dtype promotion maps float64 to float32 on its non-TensorFlow backends
#: (keras/src/backend/common/dtypes.py, BIT64_TO_BIT32_DTYPE: "to be aligned with JAX's default
#: behavior", whether or not jax_enable_x64 is on). On jax, ``ops.mean`` computes in
#: result_type(x, float32), hence float32, so ``MeanSquaredError`` of a float64 cell is a
#: float32 mean: the cell is correct to float32 precision and no better.
KERAS_JAX_MEAN_IN_FLOAT32 = Explanation(
    backends="keras.jax",
    dtypes="float64",
    reason=(
        "Keras 3 on jax computes keras.ops.mean (so MeanSquaredError) of float64 in float32: "
        "its dtype promotion maps float64 to float32 on non-TensorFlow backends "
        "(keras/src/backend/common/dtypes.py, BIT64_TO_BIT32_DTYPE)"
    ),
    variant={"compute_dtype": "float32"},
)

SPEC = CaseSpec(
    name="keras_sequential",
    title="Sequential Dense(relu) -> Dense with biases, MSE, SGD",
    seed_source='"Keras: High-level API" (and torch nn.Sequential with mse_loss)',
    summary="Dense(H, relu), Dense(D_out); mean squared error; SGD lr 1e-3",
    default_steps=1000,
    config=CONFIG,
    param_names=("w1", "b1", "w2", "b2"),
    draw=draw,
    flops_per_step=two_layer_step_flops,
    notes=(
        "lr 1e-3 instead of the seed's 1e-6, so float32 updates are visible.",
        "biases start non-zero so that bias bugs show from step 0.",
        "Keras 3 optimizers have no minimize() (the seed's opt.minimize is Keras 2).",
    ),
    explanations=(KERAS_JAX_MEAN_IN_FLOAT32,),
)
