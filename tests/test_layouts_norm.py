"""BatchNorm and LayerNorm layouts: round trips; torch's and Keras's layers loaded from the same
canonical weights and statistics compute the same output (evaluation and training mode) and
the same running mean after a step, with the momentum converted; the running variance differs
by exactly the documented unbiased/biased term; gamma and beta swapped, the statistics
swapped, the momentum or the epsilon left unconverted, each shows."""

from __future__ import annotations

import numpy as np
import pytest
from test_layouts_frameworks import (
    assert_differs,
    assert_round_trips,
    assert_same,
    draw,
    keras_load,
    keras_or_skip,
    planted,
    to_numpy,
    torch_load,
    torch_or_skip,
)

from equiv import layouts as L
from equiv.layouts import LayoutError, copy, keras_batch_norm_args, keras_momentum, torch_momentum

BN_LAYOUTS = [L.torch_batch_norm, L.keras_batch_norm, L.flax_batch_norm]
LN_LAYOUTS = [L.torch_layer_norm, L.keras_layer_norm, L.flax_layer_norm]


@pytest.mark.parametrize("make", BN_LAYOUTS + LN_LAYOUTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("affine", [True, False])
def test_round_trip_is_bit_exact(make, affine):
    assert_round_trips(make(3, affine))


def test_running_statistics_are_state():
    layout = L.keras_batch_norm(3)
    assert layout.state == {"running_mean", "running_var"}
    assert layout.params == ("gamma", "beta")
    assert layout.trainable == ("gamma", "beta")
    assert L.torch_batch_norm(3).ignored == {
        "num_batches_tracked": "a step counter, used only with momentum=None"
    }


def test_momentum_and_epsilon_conversions():
    assert keras_momentum(0.1) == 0.9
    assert torch_momentum(0.99) == pytest.approx(0.01)
    assert keras_batch_norm_args() == {"momentum": 0.9, "epsilon": 1e-5}
    assert L.BATCH_NORM_EPS["keras"] == 1e-3 and L.LAYER_NORM_EPS["flax"] == 1e-6
    with pytest.raises(LayoutError, match="momentum 1.5 is not in"):
        keras_momentum(1.5)


# -- BatchNorm, the real layers -------------------------------------------------------------

#: torch's default; Keras's 0.9 (1 - 0.1 is 0.9 exactly in float64)
MOMENTUM = 0.1


def _batch_norms(keras_layout=None, keras_args=None, x_shape=(4, 3, 5, 5)):
    torch, keras = torch_or_skip(), keras_or_skip()
    params = draw(L.torch_batch_norm(3))
    bn_torch = torch.nn.BatchNorm2d(3, momentum=MOMENTUM, dtype=torch.float64)
    torch_load(bn_torch, L.torch_batch_norm(3), params)
    args = keras_args if keras_args is not None else keras_batch_norm_args(MOMENTUM)
    bn_keras = keras.layers.BatchNormalization(**args, dtype="float64")
    bn_keras.build((None, 5, 5, 3))
    keras_load(bn_keras, keras_layout or L.keras_batch_norm(3), params)
    x = np.random.default_rng(2).standard_normal(x_shape) * 2.0 + 0.3
    return torch, bn_torch, bn_keras, x


def _evaluate(keras_layout=None, keras_args=None):
    torch, bn_torch, bn_keras, x = _batch_norms(keras_layout, keras_args)
    bn_torch.eval()
    with torch.no_grad():
        y_torch = bn_torch(torch.from_numpy(x))
    nhwc = L.keras_batch_norm(3).inputs
    y_keras = nhwc.to_canonical(np.asarray(bn_keras(nhwc.to_framework(x), training=False)))
    return y_torch, y_keras


def test_evaluation_mode_agrees():
    assert_same(*_evaluate())


def test_training_step_agrees_but_the_running_variance_by_the_documented_term():
    torch, bn_torch, bn_keras, x = _batch_norms()
    nhwc = L.keras_batch_norm(3).inputs
    before = draw(L.torch_batch_norm(3))
    bn_torch.train()
    with torch.no_grad():
        y_torch = bn_torch(torch.from_numpy(x))
    y_keras = nhwc.to_canonical(np.asarray(bn_keras(nhwc.to_framework(x), training=True)))
    assert_same(y_torch, y_keras)  # both normalise with the biased batch variance
    state_torch = L.torch_batch_norm(3).to_canonical(
        {k: to_numpy(v) for k, v in bn_torch.state_dict().items()}
    )
    state_keras = L.keras_batch_norm(3).to_canonical(
        dict(zip(L.keras_batch_norm(3).names, bn_keras.get_weights(), strict=True))
    )
    assert_same(state_torch["running_mean"], state_keras["running_mean"])
    n = x.shape[0] * x.shape[2] * x.shape[3]
    biased = x.var(axis=(0, 2, 3))
    expected_keras = (1 - MOMENTUM) * before["running_var"] + MOMENTUM * biased
    assert_same(state_keras["running_var"], expected_keras)
    assert_same(
        state_torch["running_var"] - state_keras["running_var"], MOMENTUM * biased / (n - 1)
    )


def test_the_momentum_left_unconverted_shows_in_the_running_mean():
    torch, bn_torch, bn_keras, x = _batch_norms(keras_args={"momentum": MOMENTUM, "epsilon": 1e-5})
    nhwc = L.keras_batch_norm(3).inputs
    bn_torch.train()
    with torch.no_grad():
        bn_torch(torch.from_numpy(x))
    bn_keras(nhwc.to_framework(x), training=True)
    assert_differs(bn_torch.running_mean, bn_keras.moving_mean.numpy())


def test_keras_default_epsilon_is_not_torchs():
    assert_differs(*_evaluate(keras_args={"momentum": keras_momentum(MOMENTUM)}))


@pytest.mark.parametrize(
    "rules",
    [
        (copy("gamma", "beta"), copy("beta", "gamma")),
        (copy("running_mean", "moving_variance"), copy("running_var", "moving_mean")),
    ],
    ids=["gamma_beta_swapped", "statistics_swapped"],
)
def test_swapped_vectors_load_and_compute_another_normalisation(rules):
    assert_differs(*_evaluate(keras_layout=planted(L.keras_batch_norm(3), *rules)))


# -- LayerNorm, the real layers -------------------------------------------------------------


def _layer_norms(shape, keras_layout=None):
    torch, keras = torch_or_skip(), keras_or_skip()
    params = draw(L.torch_layer_norm(shape))
    ln_torch = torch.nn.LayerNorm(shape, dtype=torch.float64)
    torch_load(ln_torch, L.torch_layer_norm(shape), params)
    axes = list(range(-len(shape), 0))
    ln_keras = keras.layers.LayerNormalization(axis=axes, epsilon=1e-5, dtype="float64")
    x = np.random.default_rng(3).standard_normal((4, 2, 3)) * 3.0 + 1.0
    ln_keras.build(x.shape)
    keras_load(ln_keras, keras_layout or L.keras_layer_norm(shape), params)
    with torch.no_grad():
        return ln_torch(torch.from_numpy(x)), ln_keras(x)


@pytest.mark.parametrize("shape", [(3,), (2, 3)], ids=str)
def test_layer_norms_agree(shape):
    assert_same(*_layer_norms(shape))


def test_layer_norm_gamma_beta_swapped_computes_another_map():
    wrong = planted(L.keras_layer_norm(3), copy("gamma", "beta"), copy("beta", "gamma"))
    assert_differs(*_layer_norms((3,), wrong))
