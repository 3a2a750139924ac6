"""lstm_regressor: a sequence regressor, one LSTM layer and a linear head on its last step.

The program a person ports: x (N, T, F) -> ``nn.LSTM(F, H, batch_first=True)`` -> the output
at the last time step -> ``nn.Linear(H, out)`` -> mean squared error against y (N, out); SGD
(lr 0.1) for 20 steps. N=8, T=6, F=3, H=5, out=2: 6 parameter arrays, 232 numbers, a cell
well under a second.

There is no numpy reference (no ``reference.py``): a hand-written LSTM backward is what one
gives up on, and the case names the torch port as its ground truth instead
(``reference_port="torch.eager"``, ``docs/port-reference.md``). The torch port computes each
step's gradients in float64; equiv's own update rule (``equiv.optim``, from ``CONFIG``) applies
them.

Canonical parameters are ``equiv.layouts``'s LSTM and dense layouts composed under ``lstm``
and ``head`` (``lstm.kernel_ih`` (F, 4H), ``lstm.kernel_hh`` (H, 4H), ``lstm.bias_ih``,
``lstm.bias_hh`` (4H,), gates i, f, g, o; ``head.kernel`` (H, out), ``head.bias``). torch holds
two LSTM biases; Keras's LSTM and the JAX port hold one, their sum: what those ports report
is the observable ``lstm.bias_ih+bias_hh``, and the harness compares it
(``equiv.layouts.keras_lstm``). The forward pass and the gradients agree (each bias's gradient
is the sum's); the training does not: ``SINGLE_BIAS`` below declares it and proves it.

``optimizer`` is read by every port: ``"sgd"`` (this case) or ``"adam"`` (torch.optim.Adam,
Keras's Adam, equiv-jax's Adam); a case with Adam would also declare Keras's epsilon-hat form
(``optimizer: "adam_epsilon_hat"`` for ``keras.*``), as keras_sequential_adam does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from equiv.case import CaseSpec, Explanation
from equiv.support.draws import torch_linear

CONFIG: dict[str, Any] = {
    "N": 8,
    "T": 6,
    "F": 3,
    "H": 5,
    "out": 2,
    "loss_reduction": "mean",
    "optimizer": "sgd",
    "lr": 0.1,
    # for "adam": torch's defaults, passed by every port
    "beta_1": 0.9,
    "beta_2": 0.999,
    "epsilon": 1e-8,
}

PARAM_NAMES = (
    "lstm.kernel_ih",
    "lstm.kernel_hh",
    "lstm.bias_ih",
    "lstm.bias_hh",
    "head.kernel",
    "head.bias",
)


def draw(rng: np.random.Generator, cfg: dict[str, Any]) -> tuple[dict, dict]:
    """Standard normal data, x first; torch's initialisation: every LSTM tensor uniform in
    +-1/sqrt(H) (``nn.LSTM.reset_parameters``), the head as ``nn.Linear``'s. The biases start
    away from Keras's zeros (and its forget-gate ones), so a bias never loaded shows at step 0."""
    n, t, f, h, out = cfg["N"], cfg["T"], cfg["F"], cfg["H"], cfg["out"]
    data = {"x": rng.standard_normal((n, t, f)), "y": rng.standard_normal((n, out))}
    bound = 1.0 / np.sqrt(h)
    shapes = {
        "lstm.kernel_ih": (f, 4 * h),
        "lstm.kernel_hh": (h, 4 * h),
        "lstm.bias_ih": (4 * h,),
        "lstm.bias_hh": (4 * h,),
    }
    params = {name: rng.uniform(-bound, bound, size=shape) for name, shape in shapes.items()}
    params["head.kernel"], params["head.bias"] = torch_linear(rng, h, out)
    return data, params


def step_flops(cfg: dict[str, Any]) -> int:
    """Matmul FLOPs of one step (forward, and twice that backward): the LSTM's two gate
    products at every time step and the head; the gates' elementwise work is left out."""
    n, t, f, h, out = cfg["N"], cfg["T"], cfg["F"], cfg["H"], cfg["out"]
    forward = 2 * n * t * (f + h) * 4 * h + 2 * n * h * out
    return 3 * forward


_TWO_BIASES = (
    "torch.nn.LSTM makes two biases, b_ih and b_hh, each a Parameter (torch/nn/modules/rnn.py, "
    "RNNBase.__init__: 'Second bias vector included for CuDNN compatibility'); "
)
_TRAINED_ONCE = (
    ". Each gets the same gradient g, so under SGD torch moves b_ih + b_hh by 2 lr g a step "
    "and {who} its one bias by lr g; torch with bias_hh frozen (its gradient computed, never "
    "applied) trains the sum once, as {who} does"
)
#: the variant: equiv.optim's ``frozen`` (an optimizer key, so a port reference expresses it)
FROZEN_BIAS_HH = {"frozen": ("lstm.bias_hh",)}

SINGLE_BIAS = (
    Explanation(
        backends="keras.*",
        reason=(
            _TWO_BIASES
            + "Keras's LSTMCell makes one bias of 4 * units and adds it once to the gate "
            "pre-activations (keras/src/layers/rnn/lstm.py, LSTMCell.build and call)"
            + _TRAINED_ONCE.format(who="Keras")
        ),
        variant=FROZEN_BIAS_HH,
    ),
    Explanation(
        backends="jax.*",
        reason=(
            _TWO_BIASES + "the JAX port adds one bias per gate, as JAX code and Flax's LSTMCell "
            "(flax/linen/recurrent.py, its h* Dense layers) hold it (lstm_regressor/jax_impl.py)"
            + _TRAINED_ONCE.format(who="the JAX port")
        ),
        variant=FROZEN_BIAS_HH,
    ),
)

KERAS_JAX_FLOAT32 = Explanation(
    backends="keras.jax",
    dtypes="float64",
    reason=(
        "Keras 3 on jax computes keras.ops.tanh (the LSTM's cell and output activations) and "
        "keras.ops.mean (MeanSquaredError) of float64 in float32: tanh casts to "
        "result_type(x.dtype, float) and mean computes in result_type(x.dtype, 'float32') "
        "(keras/src/backend/jax/numpy.py), and Keras's dtype promotion maps float64 to float32 "
        "on non-TensorFlow backends (keras/src/backend/common/dtypes.py, BIT64_TO_BIT32_DTYPE)"
    ),
    variant={"compute_dtype": "float32"},
)

SPEC = CaseSpec(
    name="lstm_regressor",
    title="LSTM sequence regressor (last step -> Linear), MSE, SGD; a port as the reference",
    seed_source="equiv's example case package (examples/equiv-transformer)",
    summary="nn.LSTM(3, 5, batch_first) -> last step -> Linear(5, 2); MSE; SGD lr 0.1",
    default_steps=20,
    config=CONFIG,
    param_names=PARAM_NAMES,
    draw=draw,
    flops_per_step=step_flops,
    notes=(
        "no numpy reference: the torch port (torch.eager, float64) is the ground truth, its "
        "gradients applied by equiv.optim (docs/port-reference.md).",
        "Keras's LSTM and the JAX port hold one bias, b_ih + b_hh: the observable "
        "lstm.bias_ih+bias_hh is compared in place of the two (equiv.layouts.keras_lstm); "
        "their training differs from torch's by declaration (SINGLE_BIAS).",
        "activations: lstm, the LSTM's output sequence (N, T, H) (Keras with "
        "return_sequences=True, then the last step sliced, as torch's out[:, -1]); head, the "
        "prediction (N, out). torch.jit records none: TorchScript hooks take one tensor "
        "out, and nn.LSTM returns (output, (h, c)).",
        "Keras's and torch's gate orders agree (i, f, g/c, o), as do their activations "
        "(sigmoid, tanh); Keras's unit_forget_bias only changes an initial value, which is "
        "loaded over.",
    ),
    explanations=(*SINGLE_BIAS, KERAS_JAX_FLOAT32),
    activation_names=("lstm", "head"),
    package="equiv_transformer",
    reference_port="torch.eager",
    # eager JAX traces and compiles the lax.scan's body at every call, ~1 s a step (jax_impl.py):
    # its cells are left to `pytest -m slow`; `equiv run` runs them as any other
    slow_backends=("jax.eager",),
)
