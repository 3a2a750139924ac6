"""resnet18's JAX port on its own: the canonical state in and out, a complete record, and the
two conventions a port most easily gets wrong, each with its planted bug kept as a test.

- Padding: torch pads a stride-2 convolution symmetrically; ``"SAME"`` pads (2, 3) for the
  stem (7x7 on 32 pixels) and (0, 1) for a 3x3 on an even size, with the same output shape.
- Running variance: torch's uses the unbiased batch variance (n / (n - 1)); the biased one
  (Keras's) is another running statistic and another evaluation-mode output.

The record checks recompute a layer from the record's own input to it, in numpy (float64), so
they hold without the case's reference; the plants show each check fails on the bug.

The checks of the whole model are marked ``slow``, as the case marks its JAX cells
(``slow_backends``): XLA compiles resnet18's step for 10-25 s a process (jax.jit, float64) and
op by op for about as long (jax.eager), half of what the rest of equiv-jax's tests cost
together. They run with ``pytest -n auto -m slow``; the padding and running-variance plants
below run a single layer and stay in the default run.
"""

from __future__ import annotations

import math
from importlib.metadata import PackageNotFoundError, distribution

import numpy as np
import pytest
from cases.resnet18 import spec as resnet
from equiv.backends.implementations import ImplSource, Patch
from equiv.case import get_case
from equiv.registry import get_backend

try:
    distribution("equiv-jax")
except PackageNotFoundError:
    pytest.skip(
        "equiv-jax is not installed (pip install -e plugins/equiv-jax)", allow_module_level=True
    )
pytest.importorskip("jax")

MODULE = "equiv_jax.cases.resnet18"
SAME_PADDING = Patch(
    "padding=((padding, padding), (padding, padding)),",
    'padding="SAME" if stride > 1 else ((padding, padding), (padding, padding)),',
)
BIASED_RUNNING_VAR = Patch("unbiased = var * (n / (n - 1))", "unbiased = var")
#: float64 recomputations in another order: agreement to a few ulps of the values' scale
RTOL = 1e-10


def numpy_conv(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """NCHW x OIHW, zero-padded ``padding`` on every side, as torch's Conv2d (im2col)."""
    n, _, size, _ = x.shape
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = (size + 2 * padding - k) // stride + 1
    cols = np.empty((n, out, out) + w.shape[1:])
    for i in range(out):
        for j in range(out):
            cols[:, i, j] = xp[:, :, i * stride : i * stride + k, j * stride : j * stride + k]
    return np.einsum("nijchw,ochw->noij", cols, w)


def torch_running_stats(conv_out: np.ndarray, momentum: float) -> tuple[np.ndarray, np.ndarray]:
    """The running mean and variance after one step from 0 and 1, torch's way."""
    n = conv_out.shape[0] * conv_out.shape[2] * conv_out.shape[3]
    mean = conv_out.mean(axis=(0, 2, 3))
    var = conv_out.var(axis=(0, 2, 3)) * n / (n - 1)
    return momentum * mean, (1 - momentum) * 1.0 + momentum * var


def check_conv(out, x, w, stride, padding) -> None:
    expected = numpy_conv(np.asarray(x, np.float64), np.asarray(w, np.float64), stride, padding)
    assert out.shape == expected.shape
    scale = np.abs(expected).max()
    np.testing.assert_allclose(out, expected, rtol=0, atol=RTOL * scale)


def check_running_stats(mean, var, conv_out, momentum) -> None:
    expected_mean, expected_var = torch_running_stats(np.asarray(conv_out, np.float64), momentum)
    np.testing.assert_allclose(mean, expected_mean, rtol=RTOL, atol=RTOL)
    np.testing.assert_allclose(var, expected_var, rtol=RTOL)


def trainer(backend_id: str, dtype: str, patches=(), variant=()):
    spec = get_case("resnet18")
    state = spec.make_state(0, dtype, variant)
    backend = get_backend(backend_id)
    backend.configure(1)
    module = ImplSource(MODULE, tuple(patches)).load()
    return backend.build_trainer(spec, state, module), state


@pytest.fixture(scope="module")
def two_steps():
    """jax.jit, float64: the state and the records of two steps."""
    tr, state = trainer("jax.jit", "float64")
    records = []
    for _ in range(2):
        tr.run_step()
        records.append(tr.record())
    return state, records


@pytest.mark.slow
def test_canonical_state_goes_in_and_comes_out_exactly():
    """With lr 0 the parameters after a step are the drawn ones bit for bit, under their
    canonical names, in the spec's order and layout; the running statistics start at torch's."""
    tr, state = trainer("jax.eager", "float32", variant=(("lr", 0.0),))
    to_np = tr.backend.to_numpy
    for name in resnet.PARAM_NAMES:
        np.testing.assert_array_equal(to_np(tr.params[name]), state.params[name], err_msg=name)
    for name, value in resnet.initial_state().items():
        assert to_np(tr.stats[name]).dtype == np.float32
        np.testing.assert_array_equal(to_np(tr.stats[name]), value, err_msg=name)
    tr.run_step()
    record = tr.record()
    assert tuple(record.params) == resnet.PARAM_NAMES
    for name in resnet.PARAM_NAMES:
        assert record.params[name].dtype == np.float32
        np.testing.assert_array_equal(record.params[name], state.params[name], err_msg=name)


@pytest.mark.slow
def test_one_step_record_is_complete(two_steps):
    state, (record, _) = two_steps
    assert tuple(record.grads) == tuple(record.params) == resnet.PARAM_NAMES
    assert tuple(record.activations) == resnet.ACTIVATION_NAMES
    assert tuple(record.state) == resnet.STATE_NAMES
    assert tuple(record.evaluation) == resnet.EVALUATION_NAMES
    n, classes = state.config["N"], state.config["classes"]
    for name in resnet.PARAM_NAMES:
        assert record.grads[name].shape == record.params[name].shape == state.params[name].shape
        assert not np.array_equal(record.params[name], state.params[name]), name
    for name, value in resnet.initial_state().items():
        assert record.state[name].shape == value.shape
        assert not np.array_equal(record.state[name], value), name
    for (conv, _, cout, _, _, _, bn), _, size in resnet.conv_geometry():
        assert (
            record.activations[conv].shape == record.activations[bn].shape == (n, cout, size, size)
        )
    assert record.activations["maxpool"].shape == (n, 64, 8, 8)
    assert record.activations["layer4.1"].shape == (n, 512, 1, 1)
    assert record.activations["avgpool"].shape == (n, 512)
    assert record.activations["fc"].shape == record.evaluation["logits"].shape == (n, classes)
    every = [*record.grads.values(), *record.params.values(), *record.activations.values()]
    every += [*record.state.values(), *record.evaluation.values(), np.asarray(record.loss)]
    assert all(v.dtype == np.float64 and np.isfinite(v).all() for v in every)
    assert abs(record.loss - math.log(classes)) < 1.0  # ~ln(10) from a fresh init
    # evaluation mode after the update is another function of x than the training forward
    assert not np.allclose(record.evaluation["logits"], record.activations["fc"])


@pytest.mark.slow
def test_loss_is_the_cross_entropy_of_the_recorded_logits(two_steps):
    state, (record, _) = two_steps
    logits = record.activations["fc"]
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    labels = state.data["y"].astype(int)
    expected = -log_p[np.arange(len(labels)), labels].mean()
    assert record.loss == pytest.approx(expected, rel=RTOL)


@pytest.mark.slow
def test_sgd_momentum_is_torchs(two_steps):
    """buf = g on the first step, then 0.9 * buf + g; p -= lr * buf."""
    state, (first, second) = two_steps
    lr, momentum = state.config["lr"], state.config["momentum"]
    for name in resnet.PARAM_NAMES:
        g0, g1 = first.grads[name], second.grads[name]
        np.testing.assert_allclose(first.params[name], state.params[name] - lr * g0, rtol=RTOL)
        expected = first.params[name] - lr * (momentum * g0 + g1)
        np.testing.assert_allclose(second.params[name], expected, rtol=RTOL, atol=1e-15)


@pytest.mark.slow
def test_convolutions_are_padded_symmetrically(two_steps):
    """The stem (7x7, stride 2, pad 3) from the data and layer2's first 3x3 stride-2 conv (pad
    1) from layer1's output, recomputed with torch's padding, match the record."""
    state, (record, _) = two_steps
    x, params, acts = state.data["x"], state.params, record.activations
    check_conv(acts["conv1"], x, params["conv1.weight"], 2, 3)
    check_conv(acts["layer2.0.conv1"], acts["layer1.1"], params["layer2.0.conv1.weight"], 2, 1)
    check_conv(
        acts["layer2.0.downsample.0"],
        acts["layer1.1"],
        params["layer2.0.downsample.0.weight"],
        2,
        0,
    )


@pytest.mark.parametrize("geometry", [(32, 7, 3), (8, 3, 1)], ids=["stem", "3x3"])
def test_a_planted_same_padding_is_caught(geometry):
    """``"SAME"`` at stride 2 gives the same shape as torch's padding and other numbers."""
    import jax.numpy as jnp

    size, k, padding = geometry
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, size, size)), rng.standard_normal((4, 3, k, k))
    get_backend("jax.eager").configure(1)  # float64 on
    args = (jnp.asarray(x), jnp.asarray(w), 2, padding)
    check_conv(np.asarray(ImplSource(MODULE).load().conv2d(*args)), x, w, 2, padding)
    planted = np.asarray(ImplSource(MODULE, (SAME_PADDING,)).load().conv2d(*args))
    with pytest.raises(AssertionError):
        check_conv(planted, x, w, 2, padding)


@pytest.mark.slow
def test_running_statistics_are_torchs(two_steps):
    """Every BatchNorm's running mean and (unbiased) variance after step 0, from its conv's
    recorded output; and its output normalised with the biased batch variance, eps 1e-5."""
    state, (record, _) = two_steps
    momentum, eps = state.config["bn_momentum"], state.config["bn_eps"]
    for conv, _, _, _, _, _, bn in resnet.conv_layers():
        h = record.activations[conv]
        check_running_stats(
            record.state[f"{bn}.running_mean"], record.state[f"{bn}.running_var"], h, momentum
        )
        mean, var = h.mean(axis=(0, 2, 3), keepdims=True), h.var(axis=(0, 2, 3), keepdims=True)
        # gamma 1 and beta 0 in the drawn state: the step's forward is (h - mean) / sqrt(...)
        expected = (h - mean) / np.sqrt(var + eps)
        np.testing.assert_allclose(record.activations[bn], expected, rtol=0, atol=RTOL, err_msg=bn)


def test_a_planted_biased_running_variance_is_caught():
    import jax.numpy as jnp

    rng = np.random.default_rng(1)
    h = rng.standard_normal((4, 8, 2, 2)) * 3 + 1  # n = 16: n / (n - 1) is 7% off
    get_backend("jax.eager").configure(1)
    cfg = resnet.CONFIG
    params = {"bn1.weight": jnp.ones(8), "bn1.bias": jnp.zeros(8)}
    stats = {"bn1.running_mean": jnp.zeros(8), "bn1.running_var": jnp.ones(8)}

    def new_stats(patches):
        forward = ImplSource(MODULE, patches).load().Forward(params, stats, cfg, train=True)
        forward.bn("bn1", jnp.asarray(h))
        return [np.asarray(forward.new_stats[f"bn1.{s}"]) for s in ("running_mean", "running_var")]

    check_running_stats(*new_stats(()), h, cfg["bn_momentum"])
    with pytest.raises(AssertionError):
        check_running_stats(*new_stats((BIASED_RUNNING_VAR,)), h, cfg["bn_momentum"])
