"""resnet18's plain-TensorFlow trainer (``cases/resnet18/tf_impl.py``).

What a channels-last port gets wrong without an error: the canonical state loaded or read back
in the wrong layout, TF's ``padding="SAME"`` (bottom/right with stride 2) for torch's symmetric
padding, the biased batch variance in the running variance, and XLA's max-pool stand-in routing
the gradient elsewhere than torch's. Each check below compares with ``equiv.reference.layers``
(numpy, NCHW,
torch's conventions) or with a relation that holds exactly in real arithmetic, in float64, and
each planted bug is kept as a test that the check catches. The comparison with the reference over
steps is the runner's (``equiv run --case resnet18 --backend tf.eager ...``); the compiled modes
are measured in the report, not here (an XLA compile takes tens of seconds).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import tensorflow as tf  # noqa: E402

from cases.resnet18 import layout  # noqa: E402
from cases.resnet18.spec import (  # noqa: E402
    ACTIVATION_NAMES,
    PARAM_NAMES,
    SPEC,
    STATE_NAMES,
    batchnorms,
    blocks,
    conv_geometry,
    conv_layers,
    initial_state,
)
from equiv.backends.implementations import ImplSource, Patch  # noqa: E402
from equiv.backends.registry import get_backend  # noqa: E402
from equiv.reference import layers  # noqa: E402

SEED = 3
#: float64 margins for relations that hold exactly in real arithmetic (not parity tolerances)
RTOL, ATOL = 1e-9, 1e-12
MODULE = "cases.resnet18.tf_impl"

#: TF's padding="SAME": with stride 2 on an even size it pads bottom/right only
SAME_PADDING = Patch(
    """    if padding:
        x = tf.pad(x, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    return tf.nn.conv2d(x, kernel, strides=stride, padding="VALID")""",
    '    return tf.nn.conv2d(x, kernel, strides=stride, padding="SAME" if padding else "VALID")',
)
#: the running variance from the biased batch variance (Keras's convention, not torch's)
BIASED_RUNNING_VAR = Patch("unbiased = var * (n / (n - 1))", "unbiased = var")
#: an OIHW kernel transposed to HWOI and used as HWIO (O and I the wrong way round): still a
#: valid shape for kernels of equal channel counts, so nothing complains
HALF_TRANSPOSED_KERNEL = Patch(
    "np.ascontiguousarray(layout.param_to_channels_last(name, value))",
    "np.ascontiguousarray(np.transpose(value, (2, 3, 0, 1)) if value.ndim == 4 and "
    "value.shape[0] == value.shape[1] else layout.param_to_channels_last(name, value))",
)
#: the evaluation forward in training mode (batch statistics) instead of the running ones
EVAL_WITH_BATCH_STATS = Patch(
    "forward(x, params, EvalBatchNorm(self.stats, self.config), self.pool)[0]",
    "forward(x, params, TrainBatchNorm(self.stats, self.config), self.pool)[0]",
)
#: XLA's pool stand-in with its window maximum taken the other way round: a tie's gradient
#: goes to the last maximum
LAST_MAX_POOL = Patch(
    "out = window if out is None else tf.maximum(out, window)",
    "out = window if out is None else tf.maximum(window, out)",
)


def impl(*patches: Patch):
    return ImplSource(MODULE, tuple(patches)).load()


def trainer(module, dtype: str = "float64", backend: str = "tf.eager"):
    return module.build(SPEC.make_state(SEED, dtype), get_backend(backend))


def one_step(module, dtype: str = "float64", backend: str = "tf.eager"):
    t = trainer(module, dtype, backend)
    t.run_step()
    return t.record()


@pytest.fixture(scope="module")
def step64():
    return one_step(impl())


# -- the canonical state --------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["tf.eager", "tf.v1graph"])
def test_canonical_state_loads_and_reads_back_exactly(backend):
    module = impl()
    state = SPEC.make_state(SEED, "float64")
    t = module.build(state, get_backend(backend))
    if backend == "tf.v1graph":
        params, stats = t.sess.run((t.weights, t.stats))
    else:
        params, stats = t.weights, t.stats
    to_numpy = get_backend(backend).to_numpy
    back = module.canonical(to_numpy, params)
    assert tuple(back) == PARAM_NAMES
    for name in PARAM_NAMES:
        np.testing.assert_array_equal(back[name], state.params[name], err_msg=name)
    for name, value in initial_state().items():
        np.testing.assert_array_equal(to_numpy(stats[name]), value, err_msg=name)


def stem_and_block_convolutions_match_torch(module) -> bool:
    """The loaded stem kernel and a stride-2 3x3 kernel (layer2.0.conv1), applied by the
    module's ``conv`` to NHWC data, give ``equiv.reference.layers.conv2d``'s NCHW result (torch's
    symmetric padding) on the canonical arrays."""
    state = SPEC.make_state(SEED, "float64")
    t = module.build(state, get_backend("tf.eager"))
    rng = np.random.default_rng(0)
    geometry = {conv: (cin, k, s, p) for conv, cin, _, k, s, p, _ in conv_layers()}
    for conv, size in (("conv1", 32), ("layer2.0.conv1", 8)):
        cin, _, stride, padding = geometry[conv]
        x = rng.standard_normal((2, cin, size, size))
        kernel = state.params[f"{conv}.weight"]
        expected, _ = layers.conv2d(x, kernel, stride, padding)
        found = module.conv(
            tf.constant(layout.activation_to_channels_last(x)),
            t.weights[f"{conv}.weight"],
            stride,
            padding,
        )
        found = layout.activation_to_canonical(found.numpy())
        if found.shape != expected.shape or not np.allclose(found, expected, RTOL, ATOL):
            return False
    return True


def test_convolutions_pad_symmetrically_as_torch():
    assert stem_and_block_convolutions_match_torch(impl())


def test_planted_same_padding_is_another_convolution():
    assert not stem_and_block_convolutions_match_torch(impl(SAME_PADDING))


def test_planted_half_transposed_kernel_is_another_convolution():
    """layer2.0.conv1 is 128 x 64: the plant spares it; check a 64 x 64 kernel instead."""
    for module, agrees in ((impl(), True), (impl(HALF_TRANSPOSED_KERNEL), False)):
        state = SPEC.make_state(SEED, "float64")
        t = module.build(state, get_backend("tf.eager"))
        x = np.random.default_rng(1).standard_normal((2, 64, 8, 8))
        kernel = state.params["layer1.0.conv1.weight"]
        expected, _ = layers.conv2d(x, kernel, 1, 1)
        found = module.conv(
            tf.constant(layout.activation_to_channels_last(x)),
            t.weights["layer1.0.conv1.weight"],
            1,
            1,
        )
        found = layout.activation_to_canonical(found.numpy())
        assert np.allclose(found, expected, RTOL, ATOL) is agrees


# -- one step's record ----------------------------------------------------------------------


def expected_activation_shapes(n: int) -> dict[str, tuple[int, ...]]:
    """NCHW shapes from the spec's geometry (conv outputs and their BatchNorms, the blocks)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for (conv, _, cout, _, _, _, bn), _, out in conv_geometry(SPEC.config):
        shapes[conv] = shapes[bn] = (n, cout, out, out)
        if conv == "conv1":
            shapes["relu"] = (n, cout, out, out)
            pooled = (out + 2 - 3) // 2 + 1
            shapes["maxpool"] = (n, cout, pooled, pooled)
        if ".conv2" in conv:
            shapes[conv.rsplit(".", 1)[0]] = (n, cout, out, out)
    shapes["avgpool"] = (n, 512)
    shapes["fc"] = (n, SPEC.config["classes"])
    return shapes


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_step_record_is_complete_and_canonical(dtype, step64):
    record = step64 if dtype == "float64" else one_step(impl(), dtype)
    state = SPEC.make_state(SEED, dtype)
    assert tuple(record.grads) == tuple(record.params) == PARAM_NAMES
    assert tuple(record.activations) == ACTIVATION_NAMES
    assert tuple(record.state) == STATE_NAMES
    assert tuple(record.evaluation) == ("logits",)
    shapes = expected_activation_shapes(SPEC.config["N"])
    for group in (record.grads, record.params):
        for name, value in group.items():
            assert value.shape == state.params[name].shape and value.dtype == dtype, name
    for name, value in record.activations.items():
        assert value.shape == shapes[name] and value.dtype == dtype, name
    for name, value in record.state.items():
        assert value.shape == initial_state()[name].shape and value.dtype == dtype, name
    assert record.evaluation["logits"].shape == (SPEC.config["N"], SPEC.config["classes"])
    assert np.asarray(record.loss).dtype == dtype
    # drawn weights, 10 classes: the first loss is near ln(10)
    assert 1.5 < float(record.loss) < 3.5
    for name in PARAM_NAMES:  # every parameter moved (torch's first momentum step is -lr * g)
        lr = SPEC.config["lr"]
        moved = record.params[name] - state.params[name]
        np.testing.assert_allclose(moved, -lr * record.grads[name], rtol=1e-5, atol=1e-7)
        assert np.any(record.grads[name] != 0), name


def test_loss_is_the_cross_entropy_of_the_recorded_logits(step64):
    logits = step64.activations["fc"]
    labels = SPEC.make_state(SEED, "float64").data["y"].astype(int)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(step64.loss, -log_p[np.arange(len(labels)), labels].mean(), RTOL)


def test_activations_are_the_layers_of_the_training_forward(step64):
    """Every BatchNorm output is the batch-normalised conv output (gamma 1, beta 0 at step 0),
    ``relu`` its ReLU, ``maxpool`` torch's pool of it, ``avgpool`` layer4's mean, ``fc`` the
    Dense of it: the activations are the training forward's, in canonical NCHW."""
    acts, eps = step64.activations, SPEC.config["bn_eps"]
    for conv, _, _, _, _, _, bn in conv_layers():
        expected, _, _ = layers.batch_norm_train(acts[conv], *_unit_affine(acts[conv]), eps)
        np.testing.assert_allclose(acts[bn], expected, RTOL, ATOL, err_msg=bn)
    np.testing.assert_array_equal(acts["relu"], np.maximum(acts["bn1"], 0))
    np.testing.assert_array_equal(acts["maxpool"], layers.max_pool2d(acts["relu"], 3, 2, 1)[0])
    np.testing.assert_allclose(acts["avgpool"], acts["layer4.1"].mean(axis=(2, 3)), RTOL, ATOL)
    state = SPEC.make_state(SEED, "float64")
    fc = acts["avgpool"] @ state.params["fc.weight"].T + state.params["fc.bias"]
    np.testing.assert_allclose(acts["fc"], fc, RTOL, ATOL)


def _unit_affine(x):
    channels = x.shape[1]
    return np.ones(channels), np.zeros(channels)


# -- BatchNorm's running statistics -----------------------------------------------------------


def running_stats_are_torchs(record) -> bool:
    """From mean 0 and variance 1: running_mean = 0.1 * batch mean, running_var = 0.9 + 0.1 *
    the UNBIASED batch variance, of the conv output each BatchNorm read."""
    convs = {bn: conv for conv, _, _, _, _, _, bn in conv_layers()}
    m = SPEC.config["bn_momentum"]
    for bn, _ in batchnorms():
        h = record.activations[convs[bn]]
        mean = h.mean(axis=(0, 2, 3))
        var = h.var(axis=(0, 2, 3), ddof=1)
        ok_mean = np.allclose(record.state[f"{bn}.running_mean"], m * mean, RTOL, ATOL)
        ok_var = np.allclose(record.state[f"{bn}.running_var"], (1 - m) + m * var, RTOL, ATOL)
        if not (ok_mean and ok_var):
            return False
    return True


def test_running_variance_is_unbiased(step64):
    assert running_stats_are_torchs(step64)


def test_planted_biased_running_variance_is_caught():
    assert not running_stats_are_torchs(one_step(impl(BIASED_RUNNING_VAR)))


# -- the evaluation forward -----------------------------------------------------------------


def evaluation_is_after_the_update(record) -> bool:
    """The evaluation logits are a numpy evaluation forward (``equiv.reference.layers``, BatchNorm
    on the
    running statistics) of the recorded parameters and state, i.e. after the update."""
    x = SPEC.make_state(SEED, "float64").data["x"]
    p, s, eps = record.params, record.state, SPEC.config["bn_eps"]

    def conv_bn(h, conv, bn, stride, padding):
        h, _ = layers.conv2d(h, p[f"{conv}.weight"], stride, padding)
        stats = (s[f"{bn}.running_mean"], s[f"{bn}.running_var"])
        return layers.batch_norm_eval(h, p[f"{bn}.weight"], p[f"{bn}.bias"], *stats, eps)[0]

    geometry = {conv: (bn, s_, pad) for conv, _, _, _, s_, pad, bn in conv_layers()}
    h = np.maximum(conv_bn(x, "conv1", *geometry["conv1"]), 0)
    h, _ = layers.max_pool2d(h, 3, 2, 1)
    for block, downsample in blocks():
        out = np.maximum(conv_bn(h, f"{block}.conv1", *geometry[f"{block}.conv1"]), 0)
        out = conv_bn(out, f"{block}.conv2", *geometry[f"{block}.conv2"])
        if downsample:
            h = conv_bn(h, f"{block}.downsample.0", *geometry[f"{block}.downsample.0"])
        h = np.maximum(out + h, 0)
    logits = h.mean(axis=(2, 3)) @ p["fc.weight"].T + p["fc.bias"]
    return bool(np.allclose(record.evaluation["logits"], logits, RTOL, ATOL))


def test_evaluation_logits_use_the_running_statistics_after_the_update(step64):
    assert evaluation_is_after_the_update(step64)


def test_planted_evaluation_with_batch_statistics_is_caught():
    assert not evaluation_is_after_the_update(one_step(impl(EVAL_WITH_BATCH_STATS)))


# -- XLA's max-pool stand-in ----------------------------------------------------------------


def pool_matches_torch(pool) -> bool:
    """Forward and gradient of ``pool`` (NHWC) equal ``equiv.reference.layers.max_pool2d`` (torch's:
    -inf padding, the first maximum of a window takes the gradient), on post-ReLU data with
    ties (zeros, and a window of equal positive values)."""
    rng = np.random.default_rng(2)
    x = np.maximum(rng.standard_normal((2, 3, 8, 8)), 0)
    x[0, 0, 2:5, 2:5] = 1.5  # a tie among positive values
    gy = rng.standard_normal((2, 3, 4, 4))
    expected, back = layers.max_pool2d(x, 3, 2, 1)
    x_tf = tf.constant(layout.activation_to_channels_last(x))
    with tf.GradientTape() as tape:
        tape.watch(x_tf)
        y = pool(x_tf)
    gx = tape.gradient(
        y, x_tf, output_gradients=tf.constant(layout.activation_to_channels_last(gy))
    )
    found = layout.activation_to_canonical(y.numpy())
    grad = layout.activation_to_canonical(gx.numpy())
    positive = x > 0  # where ReLU lets the gradient through
    return bool(
        np.array_equal(found, expected) and np.array_equal(grad[positive], back(gy)[positive])
    )


def test_both_max_pools_are_torchs():
    module = impl()
    assert pool_matches_torch(module.max_pool)
    assert pool_matches_torch(module.max_pool_of_slices)


def test_planted_last_maximum_pool_is_caught():
    assert not pool_matches_torch(impl(LAST_MAX_POOL).max_pool_of_slices)


def test_xla_builds_the_slice_pool_and_the_other_modes_tfs_own():
    module = impl()
    state = SPEC.make_state(SEED, "float32")
    assert module.build(state, get_backend("tf.xla")).pool is module.max_pool_of_slices
    assert module.build(state, get_backend("tf.function")).pool is module.max_pool
