"""keras_sequential_adam: keras_sequential trained with Adam, as the seed's nn examples
("Use an optimizer for different update rules": ``torch.optim.Adam(..., lr=1e-4)``, 500 steps).

The reference follows the Adam paper's Algorithm 1, as ``torch.optim.Adam`` does:
p -= lr * m_hat / (sqrt(v_hat) + eps). Keras 3 implements the paper's "epsilon hat" form
instead, p -= lr_t * m / (sqrt(v) + eps) with lr_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t),
which is Adam with eps scaled by sqrt(1 - beta_2^t): a real, documented semantic difference
(measured in float64 over 50 steps: 4.9e-5 relative in the loss). It is declared below as the
explanation for the Keras backends, with a reference variant that reproduces it; a Keras cell is
``explained`` only when that variant matches it within tolerance and the original does not.
epsilon is set explicitly to torch's 1e-8 on every backend (Keras's default is 1e-7), so that
the form is the only difference.
"""

from dataclasses import replace

from cases.keras_sequential.spec import KERAS_JAX_MEAN_IN_FLOAT32
from cases.keras_sequential.spec import SPEC as KERAS_SEQUENTIAL
from equiv.case import Explanation

CONFIG = {
    "N": 16,
    "D_in": 1000,
    "H": 100,
    "D_out": 10,
    "loss_reduction": "mean",
    "optimizer": "adam",
    "lr": 1e-4,
    "beta_1": 0.9,
    "beta_2": 0.999,
    "epsilon": 1e-8,
}

EPSILON_HAT = (
    "Keras's Adam uses the 'epsilon hat' form of the Adam paper: epsilon is added to sqrt(v) "
    "before bias correction, i.e. Adam with eps * sqrt(1 - beta_2^t)"
)

#: keras_sequential's model, data and FLOPs
SPEC = replace(
    KERAS_SEQUENTIAL,
    name="keras_sequential_adam",
    title="Sequential Dense(relu) -> Dense with biases, MSE, Adam",
    seed_source='nn examples with torch.optim.Adam(lr=1e-4); "Keras: High-level API"',
    summary="keras_sequential's model and data; Adam (Algorithm 1) with lr 1e-4, eps 1e-8",
    default_steps=500,
    config=CONFIG,
    notes=(),
    explanations=(
        Explanation(
            backends="keras.*", reason=EPSILON_HAT, variant={"optimizer": "adam_epsilon_hat"}
        ),
        Explanation(
            backends="keras.tensorflow",
            dtypes="float64",
            reason=(
                "on TensorFlow, Keras's ops.cast(beta, float64) turns the Python float into a "
                "float32 tensor first, so the bias corrections 1 - beta^t use float32-rounded "
                "betas (a 6.7e-6 relative change of the first update in float64)"
            ),
            variant={"bias_correction_betas": "float32"},
        ),
        KERAS_JAX_MEAN_IN_FLOAT32,
    ),
)
