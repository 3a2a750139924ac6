"""What a user who wants no plugin writes: one pytest function that declares a torch model and
its Keras port and asserts that they train alike (``docs/adding-a-case.md``, the short path).

No case package, no numpy reference: the torch port is the reference, run in float64, and the
Keras port is held to the tolerance equiv derives from the torch port's own rounding."""

from __future__ import annotations

import pytest

from equiv import layouts, testing
from equiv.case import Explanation

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

D_IN, H, D_OUT, N = 6, 8, 3, 16
CONFIG = {"optimizer": "adam", "lr": 1e-2, "epsilon": 1e-8}
NAMES = ("hidden.kernel", "hidden.bias", "out.kernel", "out.bias")


EPSILON_HAT = Explanation(
    backends="keras.*",
    reason="Keras's Adam adds epsilon to sqrt(v) before the bias correction",
    variant={"optimizer": "adam_epsilon_hat"},
)
FLOAT32_BETAS = Explanation(
    backends="keras.tensorflow",
    dtypes="float64",
    reason="Keras on TensorFlow casts the betas through float32 for the bias corrections",
    variant={"bias_correction_betas": "float32"},
)


def draw(rng, cfg):
    """The data and initial parameters, canonical ((in, out) kernels), from equiv's generator."""
    data = {"x": rng.standard_normal((N, D_IN)), "y": rng.standard_normal((N, D_OUT))}
    params = {
        "hidden.kernel": rng.uniform(-0.4, 0.4, (D_IN, H)),
        "hidden.bias": rng.uniform(-0.4, 0.4, H),
        "out.kernel": rng.uniform(-0.35, 0.35, (H, D_OUT)),
        "out.bias": rng.uniform(-0.35, 0.35, D_OUT),
    }
    return data, params


def torch_port(state, backend):
    from equiv.support.torch_port import port

    model = torch.nn.Sequential()
    model.add_module("hidden", torch.nn.Linear(D_IN, H))
    model.add_module("relu", torch.nn.ReLU())
    model.add_module("out", torch.nn.Linear(H, D_OUT))
    layout = layouts.compose(
        "mlp", {"hidden": layouts.torch_linear(D_IN, H), "out": layouts.torch_linear(H, D_OUT)}
    )
    return port(
        state,
        backend,
        model,
        layout=layout,
        loss=torch.nn.functional.mse_loss,
        optimizer=lambda params: torch.optim.Adam(params, lr=CONFIG["lr"], eps=1e-8),
        # "hidden" recorded after its ReLU, as Keras's Dense(activation="relu") outputs it
        activations={"hidden": "relu"},
    )


def keras_port(state, backend, epsilon=1e-8, activation="relu"):
    from equiv.support.keras_port import port

    dtype = state.dtype
    model = keras.Sequential(
        [
            keras.Input((D_IN,), dtype=dtype),
            keras.layers.Dense(H, activation=activation, dtype=dtype, name="hidden"),
            keras.layers.Dense(D_OUT, dtype=dtype, name="out"),
        ]
    )
    layout = layouts.compose(
        "mlp",
        {"hidden": layouts.keras_dense(D_IN, H), "out": layouts.keras_dense(H, D_OUT)},
        framework_sep="/",
    )
    return port(
        state,
        backend,
        model,
        layout=layout,
        loss=keras.losses.MeanSquaredError(dtype=dtype),
        optimizer=lambda: keras.optimizers.Adam(CONFIG["lr"], epsilon=epsilon),
    )


def check(name, keras_build, **kwargs):
    return testing.assert_train_alike(
        name,
        ports={"torch_impl": torch_port, "keras_impl": keras_build},
        draw=draw,
        config=CONFIG,
        param_names=NAMES,
        reference="torch.eager",
        backends=["torch.eager", "keras.tensorflow"],
        steps=3,
        **kwargs,
    )


def test_my_torch_model_and_its_keras_port_train_alike():
    """Keras's Adam is the paper's epsilon-hat form, and on TensorFlow in float64 its bias
    corrections use float32-rounded betas (keras/src/optimizers/adam.py): declared, and proven
    by the variant of equiv's update rule that reproduces them."""
    declared = [EPSILON_HAT, FLOAT32_BETAS]
    results = check("plain_mlp", keras_port, explanations=declared)
    verdicts = {r.cell.backend: r.status for r in results}
    assert verdicts == {"torch.eager": "pass", "keras.tensorflow": "explained"}


def test_a_keras_port_with_keras_default_epsilon_is_caught():
    """Planted: the Keras port left at Keras's default epsilon 1e-7 (torch's is 1e-8)."""

    def default_epsilon(state, backend):
        return keras_port(state, backend, epsilon=1e-7)

    with pytest.raises(AssertionError, match=r"plain_mlp_eps-keras.tensorflow-float64: fail"):
        check(
            "plain_mlp_eps",
            default_epsilon,
            dtypes=("float64",),
            explanations=[EPSILON_HAT, FLOAT32_BETAS],
        )


def test_a_forward_bug_names_its_layer():
    """Planted: the Keras port's hidden layer with tanh for relu. Both ports record each
    layer of their layout (torch's "hidden" after its ReLU): the failure names the layer."""

    def tanh(state, backend):
        return keras_port(state, backend, activation="tanh")

    with pytest.raises(AssertionError) as info:
        check(
            "plain_mlp_tanh",
            tanh,
            dtypes=("float64",),
            activation_names=("hidden", "out"),
            explanations=[EPSILON_HAT, FLOAT32_BETAS],
        )
    assert (
        "plain_mlp_tanh-keras.tensorflow-float64: fail at step 0 activations hidden, "
        "first wrong layer hidden" in str(info.value)
    )
