"""transformer_block: one pre-LN transformer block, every port set to the torch model's settings.

The program a person ports: x (B, T, d) -> x + MHSA(LN1(x)) with a causal mask -> + MLP(LN2(.))
with an exact (erf) GELU -> mean squared error against a target; AdamW (decoupled weight decay)
for 20 steps. It is written once per framework with that framework's own modules (torch
``nn.LayerNorm``, ``nn.MultiheadAttention``, ``nn.GELU``, ``torch.optim.AdamW``; Keras 3
``LayerNormalization``, ``MultiHeadAttention(use_causal_mask=True)``, ``Dense(activation="gelu")``,
``keras.optimizers.AdamW``; JAX by hand, AdamW as optax defines it). In this case every port
passes torch's settings explicitly (LayerNorm eps 1e-5, exact GELU, AdamW weight decay 0.01 and
eps 1e-8), so its cells pass; ``transformer_block_defaults`` is the same program with each
framework's defaults.

The one difference no setting removes is Keras's Adam update, the paper's "epsilon hat" form
(Keras's AdamW is its Adam with decoupled decay): declared below, so the float32 Keras cells
are ``explained`` by that one declaration, as keras_sequential_adam's are. Float64 Keras cells
need more, each declared with its source line: on TensorFlow, Python floats cast to float64
through float32 (GELU's 1/sqrt(2), AdamW's weight decay and betas); on jax, LayerNormalization
and MeanSquaredError computed in float32 (on torch equiv's backend declares the same).

Sizes are small on purpose (B=2, T=6, d=8, 2 heads of 4, MLP 16: 12 parameter arrays, 568
numbers): every cell runs in CI. The input has the scale of freshly initialized embeddings
(std 0.1), where LayerNorm's epsilon is a visible part of the variance (0.01): see the
defaults case. lr 1e-2 so that 20 steps move every parameter by many float32 ulps.

The parameter layout is ``equiv_transformer.layout``'s (kernels (in, out), attention as
separate q/k/v/o projections); each framework's file converts to and from its own.

The attention is bias-free in every port (torch ``bias=False``, Keras ``use_bias=False``), the
LayerNorms and the MLP keep their biases. The reason is the key bias bk: adding one vector to every
key adds q . bk to every score of a row, and softmax is invariant to a shift of a row, so bk's true
gradient is identically zero. What a port computes for it is rounding noise, different in every
correct implementation, and Adam(W) divides it by its own root mean square plus eps: bk moves by lr
* noise / (|noise| + eps), the noise amplified up to lr / eps (1e6 here), an error no
rounding-derived tolerance bounds (a 6-seed float64 sweep with bk gave 5 false alarms in 24
torch/JAX cells, all at bk's update at step 0 or 1, ~1.3 tolerances). A port that has a key bias is
compared with SGD (which moves bk by lr * noise), or with bk left out of the comparison; see
``BIAS_FREE_NOTE``."""

from __future__ import annotations

from typing import Any

import numpy as np
from equiv.case import CaseSpec, Explanation

from equiv_transformer.layout import PARAM_NAMES

CONFIG: dict[str, Any] = {
    "B": 2,
    "T": 6,
    "d": 8,
    "heads": 2,
    "mlp": 16,
    "x_std": 0.1,
    # what each port passes (matched: all of them; defaults: only lr)
    "settings": "matched",
    "ln_eps": 1e-5,
    "gelu": "exact",
    "loss_reduction": "mean",
    "optimizer": "adamw",
    "lr": 1e-2,
    "weight_decay": 0.01,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "epsilon": 1e-8,
}


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def draw(rng: np.random.Generator, cfg: dict[str, Any]) -> tuple[dict, dict]:
    """Data and canonical parameters (the attention has no biases: ``BIAS_FREE_NOTE``).
    LayerNorm scales and every bias start away from the frameworks' ones and zeros, so that a
    parameter that is never loaded shows from step 0."""
    b, t, d, m = cfg["B"], cfg["T"], cfg["d"], cfg["mlp"]
    data = {
        "x": cfg["x_std"] * rng.standard_normal((b, t, d)),
        "y": rng.standard_normal((b, t, d)),
    }
    params: dict[str, np.ndarray] = {}
    for name in PARAM_NAMES:
        if name.endswith("gamma"):
            params[name] = 1.0 + 0.1 * rng.standard_normal(d)
        elif name == "w1":
            params[name] = glorot_uniform(rng, d, m)
        elif name == "w2":
            params[name] = glorot_uniform(rng, m, d)
        elif name.startswith("w"):
            params[name] = glorot_uniform(rng, d, d)
        else:  # betas and biases
            params[name] = 0.1 * rng.standard_normal(m if name == "b1" else d)
    return data, params


def step_flops(cfg: dict[str, Any]) -> int:
    """Matmul FLOPs of one step (forward, and twice that backward): the four projections, the
    scores and the weighted sum, the MLP. LayerNorm, softmax and the update are left out."""
    b, t, d, m = cfg["B"], cfg["T"], cfg["d"], cfg["mlp"]
    forward = 2 * b * t * (4 * d * d + 2 * d * m) + 2 * 2 * b * t * t * d
    return 3 * forward


#: why the attention has no biases; in both cases' notes
BIAS_FREE_NOTE = (
    "the attention projections are bias-free (torch bias=False, Keras use_bias=False): a key "
    "bias bk adds q.bk to every score of a row, softmax is shift-invariant per row, so bk's "
    "gradient is exactly zero and what each port computes is rounding noise; Adam(W) "
    "normalizes that noise into updates lr * noise / (|noise| + eps), the noise amplified up to "
    "lr / eps, which no rounding-derived tolerance bounds (false alarms at bk's update). A port "
    "with a key bias should be compared with SGD, or with bk left out of the comparison."
)

EPSILON_HAT = Explanation(
    backends="keras.*",
    reason=(
        "Keras's AdamW is its Adam in the paper's 'epsilon hat' form (epsilon added to sqrt(v) "
        "before bias correction: Adam with eps * sqrt(1 - beta_2^t)), with torch's decoupled "
        "decay p -= p * wd * lr before the update (keras/src/optimizers/adamw.py, adam.py)"
    ),
    variant={"optimizer": "adamw_epsilon_hat"},
)

KERAS_TF_GELU = Explanation(
    backends="keras.tensorflow",
    dtypes="float64",
    reason=(
        "on TensorFlow the exact GELU (tf.nn.gelu) of float64 multiplies by 1/sqrt(2) rounded "
        "to float32: math_ops.cast(0.7071067811865476, float64) converts the Python float to a "
        "float32 tensor first (tensorflow/python/ops/nn_ops.py); a 5e-9 change of GELU's output"
    ),
    variant={"gelu_inv_sqrt2": "float32"},
)
KERAS_TF_HYPERPARAMETERS = Explanation(
    backends="keras.tensorflow",
    dtypes="float64",
    reason=(
        "on TensorFlow, Keras's ops.cast(python_float, float64) turns the Python float into a "
        "float32 tensor first, so AdamW's weight decay and the betas of its bias corrections "
        "1 - beta^t are float32-rounded (keras/src/optimizers/base_optimizer.py "
        "_apply_weight_decay, adam.py)"
    ),
    variant={"bias_correction_betas": "float32", "weight_decay_dtype": "float32"},
)
KERAS_JAX_FLOAT32 = Explanation(
    backends="keras.jax",
    dtypes="float64",
    reason=(
        "Keras 3 on jax computes keras.ops.layer_normalization (LayerNormalization) and "
        "keras.ops.mean (MeanSquaredError) of float64 in float32: both compute in "
        "result_type(x.dtype, 'float32'), and its dtype promotion maps float64 to float32 on "
        "non-TensorFlow backends (keras/src/ops/nn.py; keras/src/backend/common/dtypes.py, "
        "BIT64_TO_BIT32_DTYPE)"
    ),
    variant={"compute_dtype": "float32"},
)

#: each layer's output, as the ports built with equiv.support.torch_port/keras_port record it
#: (the torch port names its nn.Sequential's Linear layers dense1 and dense2, as Keras's are):
#: compared where the reference is a port (the numpy reference does not report them)
LAYERS = ("ln1", "attn", "ln2", "dense1", "dense2")

SPEC = CaseSpec(
    name="transformer_block",
    title="Pre-LN transformer block (causal MHSA, GELU MLP), MSE, AdamW; settings matched",
    seed_source="equiv's example case package (examples/equiv-transformer)",
    summary="x + MHSA(LN(x)) causal, + MLP(LN(.)) exact GELU; MSE; AdamW lr 1e-2 wd 0.01",
    default_steps=20,
    config=CONFIG,
    param_names=PARAM_NAMES,
    draw=draw,
    flops_per_step=step_flops,
    port_activations=LAYERS,
    notes=(
        "every port passes torch's LayerNorm eps, GELU, AdamW weight decay and epsilon.",
        BIAS_FREE_NOTE,
        "the causal mask's fill value is -inf in torch and the JAX port, -0.7 * finfo.max "
        "in Keras's attention kernel: no row is fully masked, so every masked weight is "
        "exactly 0 either way (see transformer_block_defaults).",
    ),
    explanations=(EPSILON_HAT, KERAS_TF_GELU, KERAS_TF_HYPERPARAMETERS, KERAS_JAX_FLOAT32),
    package="equiv_transformer",
)
