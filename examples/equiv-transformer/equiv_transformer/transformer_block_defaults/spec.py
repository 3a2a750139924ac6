"""transformer_block_defaults: the same block, each port written with its framework's defaults.

What a person porting the torch model gets when they write ``LayerNormalization()``,
``AdamW(learning_rate=lr)``, ``jax.nn.gelu(h)`` and ``optax.adamw(lr)`` and set nothing else.
The reference's config is what the torch author wrote (torch's defaults: LayerNorm eps 1e-5,
exact GELU, AdamW weight decay 0.01 and eps 1e-8, a -inf mask fill), so the torch cells pass.
Every difference of the other ports is declared below with the reference variant that
reproduces it; a cell is ``explained`` when its variant (all the declarations that apply to it,
merged) matches and the reference does not, and the package's tests prove that each declared
key is needed (``tests/test_explanations.py``: without it the variant no longer reproduces the
port). The defaults, from the installed sources
(keras/src/layers/normalization/layer_normalization.py, keras/src/optimizers/adamw.py and
adam.py, flax/linen/normalization.py, jax.nn.gelu, optax.adamw; keras-team/keras#17391,
jax-ml/jax#4428):

- Keras 3: ``LayerNormalization(epsilon=1e-3)``; ``AdamW(weight_decay=0.004, epsilon=1e-7)``
  in the epsilon-hat form; its ``"gelu"`` activation is exact, as torch's.
- JAX (Flax and optax defaults): ``jax.nn.gelu`` is the tanh approximation; LayerNorm eps
  1e-6; ``optax.adamw(weight_decay=1e-4)`` (eps 1e-8, as torch).

LayerNorm's epsilon matters here because the block's input has the scale of freshly
initialized embeddings (std 0.1, variance 0.01): Keras's 1e-3 changes the first LayerNorm's
output by ~5%, JAX's 1e-6 by ~5e-4 relative against torch's 1e-5.

Not declared, because it changes no number here: the causal mask's fill value (torch -inf;
Keras's attention kernel -0.7 * finfo(float32).max; Flax finfo(dtype).min). The diagonal is
never masked, so every row keeps a finite maximum, the softmax subtracts it, and every masked
weight is exp(fill - max) = 0 exactly, with a zero gradient, whatever the fill. It would
matter where a whole row is masked (a padding mask over a padded query: -inf gives NaN, a
finite fill a uniform average) or where scores reach the fill's magnitude (float16's -3e4).
"""

from __future__ import annotations

from dataclasses import replace

from equiv.case import Explanation

from equiv_transformer.transformer_block.spec import (
    BIAS_FREE_NOTE,
    EPSILON_HAT,
    KERAS_JAX_FLOAT32,
    KERAS_TF_GELU,
    KERAS_TF_HYPERPARAMETERS,
)
from equiv_transformer.transformer_block.spec import CONFIG as MATCHED_CONFIG
from equiv_transformer.transformer_block.spec import SPEC as MATCHED

CONFIG = {**MATCHED_CONFIG, "settings": "defaults"}

KERAS_LAYER_NORM = Explanation(
    backends="keras.*",
    reason=(
        "Keras's LayerNormalization defaults to epsilon=1e-3 "
        "(keras/src/layers/normalization/layer_normalization.py), torch's LayerNorm to 1e-5"
    ),
    variant={"ln_eps": 1e-3},
)
KERAS_ADAMW = Explanation(
    backends="keras.*",
    reason=(
        "Keras's AdamW defaults to weight_decay=0.004 and epsilon=1e-7 "
        "(keras/src/optimizers/adamw.py), torch's AdamW to 0.01 and 1e-8"
    ),
    variant={"weight_decay": 0.004, "epsilon": 1e-7},
)
JAX_GELU = Explanation(
    backends="jax.*",
    reason="jax.nn.gelu defaults to approximate=True, the tanh form; torch's nn.GELU is exact",
    variant={"gelu": "tanh"},
)
JAX_LAYER_NORM = Explanation(
    backends="jax.*",
    reason="the JAX port's LayerNorm uses Flax's default epsilon=1e-6; torch's is 1e-5",
    variant={"ln_eps": 1e-6},
)
JAX_ADAMW = Explanation(
    backends="jax.*",
    reason=(
        "optax.adamw defaults to weight_decay=1e-4 (optax/_src/alias.py), torch's AdamW to "
        "0.01; its update lr * (adam + wd * p) is torch's decoupled decay reordered"
    ),
    variant={"weight_decay": 1e-4},
)

SPEC = replace(
    MATCHED,
    name="transformer_block_defaults",
    title="Pre-LN transformer block, MSE, AdamW; each port with its framework's defaults",
    summary="transformer_block with LayerNorm eps, GELU and AdamW left at each one's defaults",
    config=CONFIG,
    notes=(
        "the reference's config is the torch model's (torch's defaults).",
        BIAS_FREE_NOTE,
        "Keras: LayerNorm eps 1e-3, AdamW wd 0.004 / eps 1e-7 / epsilon hat; declared.",
        "JAX: GELU tanh, LayerNorm eps 1e-6, optax adamw wd 1e-4; declared.",
        "the mask fill (-inf, -0.7 * finfo.max, finfo.min) is not declared: no row of a "
        "causal mask is fully masked, so every masked weight is exactly 0 with any fill; it "
        "would differ for a fully masked row (padding) or a fill within reach of the scores.",
    ),
    explanations=(
        EPSILON_HAT,
        KERAS_LAYER_NORM,
        KERAS_ADAMW,
        JAX_GELU,
        JAX_LAYER_NORM,
        JAX_ADAMW,
        KERAS_TF_GELU,
        KERAS_TF_HYPERPARAMETERS,
        KERAS_JAX_FLOAT32,
    ),
)
