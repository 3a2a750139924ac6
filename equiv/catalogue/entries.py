"""The catalogue of known framework differences, as data.

Each entry is one default or convention that makes "the same" training step compute other
numbers in another framework (or in a port that copied a value across conventions): what it
is, its upstream sources, the frameworks and versions it applies to, the phase of a step it
first acts in, and the reference variant that reproduces it, as overrides of the standard keys
(``equiv.catalogue.keys``). ``equiv.checking.causes`` searches it for the set of differences
that explains a failing cell; docs/known-differences.md is generated from it.

An entry whose ``variant`` is None cannot be expressed as a reference variant; ``not_expressible``
says why (random masks, conversions that a layout checks instead, ...).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the phases of a step in pipeline order; "precision" acts everywhere (a narrower compute
#: dtype) and is tried last (``Difference.last_resort``)
PHASES = ("forward", "backward", "update", "state update", "precision")


@dataclass(frozen=True)
class Complement:
    """A value taken from the case's own config: ``1 - config[key]`` (a momentum written in
    the other framework's convention)."""

    key: str

    def value(self, config: dict[str, Any]) -> Any:
        return 1.0 - config[self.key]

    def __str__(self) -> str:
        return f"1 - {self.key}"


@dataclass(frozen=True)
class Float32Of:
    """``config[key]`` rounded to float32 (a float64 hyperparameter cast through float32)."""

    key: str

    def value(self, config: dict[str, Any]) -> Any:
        return float(np.float32(config[self.key]))

    def __str__(self) -> str:
        return f"float32({self.key})"


DERIVED = (Complement, Float32Of)


@dataclass(frozen=True)
class Difference:
    id: str
    what: str
    #: backend id patterns (fnmatch) whose framework has it by default: they only order the
    #: search (a torch port with Keras's epsilon is a porting mistake to find), never filter
    frameworks: tuple[str, ...]
    versions: str
    phase: str
    sources: tuple[str, ...]
    #: the reference variant that reproduces it (values may be ``Complement``/``Float32Of`` of
    #: the case's config); None: not expressible (``not_expressible`` says why)
    variant: dict[str, Any] | None = None
    #: config keys the case's (merged) config must have, each with the values it may hold
    #: (an empty tuple: any value)
    requires: dict[str, tuple] = field(default_factory=dict)
    #: cell dtypes it can show in
    dtypes: tuple[str, ...] = ("float32", "float64")
    #: lowers the yardstick rather than naming a difference (``compute_dtype``): tried only
    #: when no named difference moves the search on
    last_resort: bool = False
    not_expressible: str = ""

    def applies(self, config: dict[str, Any], dtype: str, params: tuple[str, ...] = ()) -> bool:
        """Whether the entry can be tried on a cell whose reference config (a set of entries
        already merged in) is ``config``: the keys it requires are the case's (a config key,
        or a parameter's name), and it changes something."""
        if self.variant is None or dtype not in self.dtypes:
            return False
        for key, values in self.requires.items():
            if key in params and not values:
                continue
            if key not in config or (values and config[key] not in values):
                return False
        return self.overrides(config) != {}

    def overrides(self, config: dict[str, Any]) -> dict[str, Any]:
        """The variant for this config: derived values resolved, keys already at that value
        dropped (an entry that changes nothing explains nothing)."""
        out = {}
        for key, value in (self.variant or {}).items():
            if isinstance(value, DERIVED):
                value = value.value(config)
            if config.get(key, _MISSING) != value:
                out[key] = value
        return out

    def native_to(self, backend_id: str) -> bool:
        return any(fnmatch.fnmatchcase(backend_id, p) for p in self.frameworks)


_MISSING = object()

ADAM_FORMS = ("adam", "adamw", "adam_epsilon_hat", "adamw_epsilon_hat")
ADAMW_FORMS = ("adamw", "adamw_epsilon_hat")
EPSILON_HAT_FORMS = ("adam_epsilon_hat", "adamw_epsilon_hat")
KERAS = "Keras 3 (checked: 3.15.1)"
KERAS_TF = "Keras 3 on TensorFlow (checked: Keras 3.15.1, tensorflow-cpu 2.21.0)"

ENTRIES: tuple[Difference, ...] = (
    # --- forward ---
    Difference(
        "keras.layer_norm_eps",
        "Keras's LayerNormalization defaults to epsilon=1e-3; torch's nn.LayerNorm to 1e-5",
        ("keras.*", "tf.*"),
        KERAS,
        "forward",
        ("keras/src/layers/normalization/layer_normalization.py", "torch.nn.LayerNorm docs"),
        variant={"ln_eps": 1e-3},
        requires={"ln_eps": ()},
    ),
    Difference(
        "flax.layer_norm_eps",
        "Flax's LayerNorm defaults to epsilon=1e-6; torch's to 1e-5",
        ("jax.*",),
        "Flax linen (checked against flax/linen/normalization.py)",
        "forward",
        ("flax/linen/normalization.py",),
        variant={"ln_eps": 1e-6},
        requires={"ln_eps": ()},
    ),
    Difference(
        "keras.batch_norm_eps",
        "Keras's BatchNormalization defaults to epsilon=1e-3; torch's BatchNorm2d to 1e-5",
        ("keras.*", "tf.*"),
        KERAS,
        "forward",
        ("keras/src/layers/normalization/batch_normalization.py", "torch.nn.BatchNorm2d docs"),
        variant={"bn_eps": 1e-3},
        requires={"bn_eps": ()},
    ),
    Difference(
        "keras.torch_one_pass_variance",
        "Keras 3 on torch computes a batch's variance as E[x^2] - E[x]^2 (Flax too with "
        "use_fast_variance=True); torch and TensorFlow centre the values first",
        ("keras.torch", "jax.*"),
        KERAS + " on torch; Flax linen's use_fast_variance default",
        "forward",
        ("keras/src/backend/torch/nn.py (moments)", "google/flax discussion #1797"),
        variant={"bn_variance": "one_pass"},
        requires={"bn_variance": ()},
    ),
    Difference(
        "gelu_tanh",
        "jax.nn.gelu and keras.ops.gelu default to approximate=True, the tanh form; torch's "
        "nn.GELU and Keras's 'gelu' activation are exact (erf)",
        ("jax.*", "keras.*"),
        "jax 0.10.2, " + KERAS,
        "forward",
        ("jax/_src/nn/functions.py (gelu)", "keras/src/ops/nn.py (gelu)", "jax-ml/jax#4428"),
        variant={"gelu": "tanh"},
        requires={"gelu": ("exact",)},
    ),
    Difference(
        "tf.gelu_float32_constant",
        "TensorFlow's exact GELU of float64 multiplies by 1/sqrt(2) rounded to float32: "
        "math_ops.cast of the Python float makes a float32 tensor first",
        ("keras.tensorflow", "tf.*"),
        "tensorflow-cpu 2.21.0",
        "forward",
        ("tensorflow/python/ops/nn_ops.py (gelu)",),
        variant={"gelu_inv_sqrt2": "float32"},
        requires={"gelu": ("exact",)},
        dtypes=("float64",),
    ),
    Difference(
        "loss_reduction_sum",
        "a loss summed over elements where the original takes the mean: optax's losses are "
        "per element (a port that sums them), torch's reduction='sum' (Keras's "
        "reduction='sum' is not this: it sums per-sample means over the batch)",
        ("jax.*", "torch.*"),
        "optax (l2_loss, squared_error), torch",
        "forward",
        ("optax/_src/loss.py (squared_error)", "torch.nn.MSELoss docs (reduction)"),
        variant={"loss_reduction": "sum"},
        requires={"loss_reduction": ("mean",)},
    ),
    # --- update ---
    Difference(
        "keras.adam_epsilon",
        "Keras's Adam and AdamW default to epsilon=1e-7; torch's and optax's to 1e-8",
        ("keras.*", "tf.*"),
        KERAS,
        "update",
        ("keras/src/optimizers/adam.py", "keras/src/optimizers/adamw.py", "torch.optim.Adam docs"),
        variant={"epsilon": 1e-7},
        requires={"optimizer": ADAM_FORMS},
    ),
    Difference(
        "keras.adam_epsilon_hat",
        "Keras's Adam is the paper's 'epsilon hat' form: epsilon added to sqrt(v) before the "
        "bias correction, i.e. Adam with eps * sqrt(1 - beta_2^t)",
        ("keras.*", "tf.*"),
        KERAS,
        "update",
        ("keras/src/optimizers/adam.py", "keras-team/keras#17391"),
        variant={"optimizer": "adam_epsilon_hat"},
        requires={"optimizer": ("adam",)},
    ),
    Difference(
        "keras.adamw_epsilon_hat",
        "Keras's AdamW is its epsilon-hat Adam after a decoupled decay p -= p * wd * lr",
        ("keras.*", "tf.*"),
        KERAS,
        "update",
        ("keras/src/optimizers/adamw.py", "keras/src/optimizers/adam.py", "keras-team/keras#17391"),
        variant={"optimizer": "adamw_epsilon_hat"},
        requires={"optimizer": ("adamw",)},
    ),
    Difference(
        "keras.adamw_weight_decay",
        "Keras's AdamW defaults to weight_decay=0.004; torch's AdamW to 0.01",
        ("keras.*", "tf.*"),
        KERAS,
        "update",
        ("keras/src/optimizers/adamw.py", "torch.optim.AdamW docs"),
        variant={"weight_decay": 0.004},
        requires={"optimizer": ADAMW_FORMS},
    ),
    Difference(
        "optax.adamw_weight_decay",
        "optax.adamw defaults to weight_decay=1e-4; torch's AdamW to 0.01",
        ("jax.*",),
        "optax (checked against optax/_src/alias.py)",
        "update",
        ("optax/_src/alias.py (adamw)", "torch.optim.AdamW docs"),
        variant={"weight_decay": 1e-4},
        requires={"optimizer": ADAMW_FORMS},
    ),
    Difference(
        "keras.tf_float32_betas",
        "Keras on TensorFlow casts its betas to float64 through float32 (ops.cast of a Python "
        "float), so the epsilon-hat step size's 1 - beta^t uses float32-rounded betas",
        ("keras.tensorflow",),
        KERAS_TF,
        "update",
        ("keras/src/optimizers/adam.py", "keras/src/backend/tensorflow/core.py (cast)"),
        variant={"bias_correction_betas": "float32"},
        requires={"optimizer": EPSILON_HAT_FORMS},
        dtypes=("float64",),
    ),
    Difference(
        "keras.tf_float32_weight_decay",
        "Keras on TensorFlow casts AdamW's weight decay to float64 through float32",
        ("keras.tensorflow",),
        KERAS_TF,
        "update",
        ("keras/src/optimizers/base_optimizer.py (_apply_weight_decay)",),
        variant={"weight_decay_dtype": "float32"},
        requires={"optimizer": ("adamw_epsilon_hat",)},
        dtypes=("float64",),
    ),
    Difference(
        "keras.tf_float32_momentum",
        "Keras's SGD on TensorFlow casts its momentum to float64 through float32 "
        "(0.9 becomes 0.8999999762)",
        ("keras.tensorflow",),
        KERAS_TF,
        "update",
        ("keras/src/optimizers/sgd.py", "keras/src/backend/tensorflow/core.py (cast)"),
        variant={"momentum": Float32Of("momentum")},
        requires={"optimizer": ("sgd",), "momentum": ()},
        dtypes=("float64",),
    ),
    Difference(
        "keras.single_lstm_bias",
        "Keras's LSTM holds one bias where torch holds bias_ih and bias_hh: it trains their "
        "sum once (torch with bias_hh frozen)",
        ("keras.*", "jax.*"),
        KERAS + "; flax/linen/recurrent.py",
        "update",
        ("keras/src/layers/rnn/lstm.py", "torch.nn.LSTM docs"),
        variant={"frozen": ("lstm.bias_hh",)},
        requires={"lstm.bias_hh": ()},
    ),
    # --- running statistics ---
    Difference(
        "keras.batch_norm_momentum",
        "Keras's BatchNormalization defaults to momentum=0.99 in its own form running = m "
        "running + (1 - m) batch: torch's form m = 0.01 (torch's default 0.1)",
        ("keras.*", "jax.*"),
        KERAS + "; Flax linen BatchNorm (momentum 0.99, the same form)",
        "state update",
        ("keras/src/layers/normalization/batch_normalization.py", "flax/linen/normalization.py"),
        variant={"bn_momentum": 0.01},
        requires={"bn_momentum": ()},
    ),
    Difference(
        "batch_norm_momentum_convention",
        "a BatchNorm momentum copied across conventions: torch's m is Keras's and Flax's 1 - m "
        "(torch's 0.1 written into Keras's momentum makes running = 0.1 running + 0.9 batch)",
        ("*",),
        "every version",
        "state update",
        ("pytorch/vision#8250 (0.99 copied into torch)", "torch.nn.BatchNorm2d docs"),
        variant={"bn_momentum": Complement("bn_momentum")},
        requires={"bn_momentum": ()},
    ),
    Difference(
        "keras.biased_running_var",
        "Keras's BatchNormalization (and Flax's) update the moving variance with the biased "
        "batch variance; torch with the unbiased one, n/(n-1)",
        ("keras.*", "jax.*"),
        KERAS,
        "state update",
        (
            "keras/src/layers/normalization/batch_normalization.py",
            "torch.nn.BatchNorm2d docs",
            "pytorch/pytorch#3122",
        ),
        variant={"bn_unbiased_running_var": False},
        requires={"bn_unbiased_running_var": (True,)},
    ),
    # --- precision ---
    Difference(
        "keras.float64_in_float32",
        "Keras 3 off TensorFlow computes some float64 ops in float32 (matmul on torch; mean, "
        "layer_normalization, BatchNormalization on jax): its dtype promotion maps float64 to "
        "float32",
        ("keras.torch", "keras.jax"),
        KERAS,
        "precision",
        ("keras/src/backend/common/dtypes.py (BIT64_TO_BIT32_DTYPE)", "keras-team/keras#23704"),
        variant={"compute_dtype": "float32"},
        dtypes=("float64",),
        last_resort=True,
    ),
    # --- not expressible as a reference variant ---
    Difference(
        "dropout_masks",
        "dropout draws its masks from each framework's own generator",
        ("*",),
        "every version",
        "forward",
        ("torch.nn.Dropout docs", "JAX PRNG design notes"),
        not_expressible="masks cannot match across generators: inject the masks or set p=0",
    ),
    Difference(
        "default_init",
        "default initialisers differ (torch kaiming_uniform(a=sqrt 5), Keras glorot_uniform, "
        "Flax lecun_normal)",
        ("*",),
        "every version",
        "forward",
        ("torch.nn.Linear docs", "keras/src/layers/core/dense.py", "flax/linen/linear.py"),
        not_expressible="equiv loads every port's weights from one draw, so no cell shows it",
    ),
    Difference(
        "layouts",
        "weight layouts differ: Linear (out, in) and Dense (in, out); OIHW and HWIO; NCHW and "
        "NHWC; LSTM gates i,f,g,o; GRU r,z,n against z,r,h",
        ("*",),
        "every version",
        "forward",
        ("Flax's 'convert PyTorch to Flax' guide", "keras-team/keras#15915"),
        not_expressible="a conversion, not a setting: equiv.layouts loads and checks it "
        "(a wrong layout fails at the first step, before any variant)",
    ),
    Difference(
        "conv_same_padding",
        "'same' padding with stride 2 pads at the bottom and right (Keras, lax); torch pads "
        "k//2 on both sides",
        ("keras.*", "jax.*", "tf.*"),
        KERAS + "; jax.lax SAME",
        "forward",
        ("pytorch/pytorch#67551", "keras-team/keras#19291"),
        not_expressible="no case's reference reads a padding key yet",
    ),
    Difference(
        "cross_entropy_from_logits",
        "Keras's cross-entropies take probabilities by default (from_logits=False, clipped to "
        "[1e-7, 1 - 1e-7]); torch's CrossEntropyLoss takes logits",
        ("keras.*", "tf.*"),
        KERAS,
        "forward",
        ("keras/src/losses/losses.py", "torch.nn.CrossEntropyLoss docs"),
        not_expressible="no case's reference reads a from_logits key yet",
    ),
    Difference(
        "attention_mask_fill",
        "masked attention scores are filled with -inf (torch), a large finite negative (Keras: "
        "-0.7 finfo.max) or finfo.min (Flax)",
        ("keras.*", "jax.*"),
        KERAS,
        "forward",
        ("huggingface/transformers#17306", "huggingface/transformers#14859"),
        not_expressible="changes nothing unless a row is fully masked or scores reach the "
        "fill: no case has such a row",
    ),
    Difference(
        "sgd_momentum_form",
        "Keras's SGD keeps velocity = m velocity - lr g, torch buffer = m buffer + g",
        ("keras.*",),
        KERAS,
        "update",
        ("keras/src/optimizers/sgd.py", "pytorch/pytorch#1099"),
        not_expressible="the same maths for a constant learning rate: a rounding, which the "
        "tolerance already allows for",
    ),
    Difference(
        "partial_last_batch",
        "a partial last batch is kept (torch DataLoader drop_last=False, Keras fit) or "
        "dropped (common JAX loops)",
        ("jax.*",),
        "every version",
        "forward",
        ("torch.utils.data.DataLoader docs", "keras/src/trainers/trainer.py"),
        not_expressible="a different batch sequence, not a setting of one step: the "
        "minibatch_partial case checks it",
    ),
    Difference(
        "coupled_weight_decay",
        "torch's Adam(weight_decay=) and SGD(weight_decay=) add wd * p to the gradient "
        "(coupled, an L2 penalty); AdamW and Keras's weight_decay for every optimizer decay "
        "the weights apart from the gradient (decoupled); a Keras L2 regularizer adds 2 wd p",
        ("keras.*", "torch.*"),
        KERAS + "; torch.optim",
        "update",
        (
            "torch.optim.Adam docs",
            "keras/src/optimizers/base_optimizer.py",
            "keras/src/regularizers/regularizers.py",
        ),
        not_expressible="no reference implements the coupled form yet (equiv.optim's "
        "weight_decay is AdamW's decoupled decay)",
    ),
    Difference(
        "keras_fit_defaults",
        "Keras's fit batches 32 and shuffles by default; a torch DataLoader batches 1 and "
        "does not shuffle",
        ("keras.fit",),
        KERAS,
        "forward",
        ("keras/src/trainers/trainer.py (fit)", "torch.utils.data.DataLoader docs"),
        not_expressible="a different sequence of batches, not a setting of one step: the "
        "keras.fit backend passes the case's batch size and shuffle=False",
    ),
    Difference(
        "tf32",
        "TF32 matmuls on NVIDIA GPUs (TensorFlow and JAX on by default; torch off for matmul)",
        ("tf.*", "keras.*", "jax.*"),
        "GPU builds",
        "precision",
        ("torch CUDA semantics notes", "jax-ml/jax#12008"),
        not_expressible="a GPU setting; equiv's cells run on CPU",
    ),
)


def entry(entry_id: str) -> Difference:
    for item in ENTRIES:
        if item.id == entry_id:
            return item
    raise KeyError(f"no catalogue entry {entry_id!r}")
