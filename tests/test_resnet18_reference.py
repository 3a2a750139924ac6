"""resnet18's numpy reference: its gradients against central differences of its own loss along
random directions in parameter space (float64, through every BatchNorm), its running-statistic
update against a hand computation, its evaluation mode against its training mode, the names
and shapes of everything it returns, planted bugs that these checks catch, and (where torch
is installed) one step against torchvision's own resnet18 with the same weights."""

from __future__ import annotations

import numpy as np
import pytest

from cases.resnet18 import reference
from cases.resnet18.spec import (
    ACTIVATION_NAMES,
    PARAM_NAMES,
    SPEC,
    STATE_NAMES,
    batchnorms,
    blocks,
)
from equiv.reference import layers
from equiv.reference.gradcheck import check_gradients
from equiv.reference.numerics import Numerics


@pytest.fixture(scope="module")
def case():
    st = SPEC.make_state(seed=5, dtype="float64")
    return st.params, st.data, st.config


class Frozen(Numerics):
    """Records every ReLU mask and the max-pool's choice on the first pass, replays them on
    later ones: the loss is then smooth in the parameters, and a difference quotient measures
    the gradient, not a unit crossing its kink. Also holds the reference to asking only
    ``kink_mask`` and ``pool_choice``, each key once per pass."""

    def __init__(self):
        self.masks: dict = {}
        self.choices: dict = {}
        self.frozen = False
        self.seen: list[str] = []

    def kink_mask(self, h, key):
        return self._ask(self.masks, key, lambda: h > 0)

    def pool_choice(self, windows, key):
        return self._ask(self.choices, key, lambda: np.argmax(windows, axis=-1))

    def _ask(self, store, key, exact):
        assert key not in self.seen, f"key {key!r} asked twice in one pass"
        self.seen.append(key)
        if not self.frozen:
            store[key] = exact()
        return store[key]

    def new_pass(self):
        self.frozen, self.seen = True, []

    def branch(self, chosen):
        raise AssertionError("resnet18 has no branch")

    def relu_mask(self, *args, **kwargs):
        raise AssertionError("resnet18's ReLUs ask kink_mask")

    def product_relu_mask(self, *args, **kwargs):
        raise AssertionError("resnet18's ReLUs ask kink_mask")


def directional_check(params, data, cfg, names, seed) -> float:
    """d loss / dt at t = 0 of loss(params + t d), d random over the parameters ``names``
    (each a tenth of its parameter's rms), against the gradients' dot product with d.

    Why a tenth: moving all 11M parameters at once, the loss's third derivative along d makes
    the central difference's truncation error at the check's step (1e-5) about 1e-5 of the
    derivative, measured (it falls as h^2: 1e-3 at h = 1e-4, 1e-7 at 1e-6); a tenth of the
    size leaves it near 1e-7, below the check's 1e-5."""
    numerics = Frozen()
    _, grads, _, _ = reference.forward_backward(params, data, cfg, numerics=numerics)
    rng = np.random.default_rng(seed)
    direction = {}
    for n in names:
        scale = float(np.sqrt(np.mean(params[n] ** 2))) or 1.0
        direction[n] = rng.standard_normal(params[n].shape) * (0.1 * scale)
    analytic = sum(float(np.sum(grads[n] * direction[n])) for n in names)

    def loss(moved):
        numerics.new_pass()
        t = moved["t"][0]
        shifted = {n: p + t * direction[n] if n in direction else p for n, p in params.items()}
        return reference.forward_backward(shifted, data, cfg, numerics=numerics)[0]

    check_gradients(loss, {"t": np.zeros(1)}, {"t": np.array([analytic])})
    return analytic


BN_PARAMS = [n for n in PARAM_NAMES if ".bn" in n or "downsample.1" in n]
CONV_PARAMS = [n for n in PARAM_NAMES if n.endswith(".weight") and "conv" in n]


@pytest.mark.parametrize(
    "names,seed",
    [(list(PARAM_NAMES), 0), (list(PARAM_NAMES), 1), (BN_PARAMS, 2), (CONV_PARAMS, 3)],
    ids=["all-0", "all-1", "batchnorm", "convolutions"],
)
def test_gradients_along_random_directions(case, names, seed):
    params, data, cfg = case
    assert directional_check(params, data, cfg, names, seed) != 0.0


def test_gradients_of_single_entries(case):
    """Two entries each of the first convolution, a BatchNorm deep in the net (1 x 1 spatial:
    its statistics are over 4 numbers) and the Dense layer."""
    params, data, cfg = case
    numerics = Frozen()
    _, grads, _, _ = reference.forward_backward(params, data, cfg, numerics=numerics)
    picked = ["conv1.weight", "layer4.1.bn1.weight", "fc.weight"]

    def loss(moved):
        numerics.new_pass()
        return reference.forward_backward({**params, **moved}, data, cfg, numerics=numerics)[0]

    inputs = {n: params[n] for n in picked}
    assert check_gradients(loss, inputs, {n: grads[n] for n in picked}, samples=2) == 6


def test_every_mask_and_the_pool_choice_come_from_numerics(case):
    """17 ReLUs (the stem's, two per block) and one max-pool, each asked under its own key;
    the reference computes with the masks it is given."""
    params, data, cfg = case
    numerics = Frozen()
    loss, *_ = reference.forward_backward(params, data, cfg, numerics=numerics)
    expected = ["relu"] + [f"{b}.relu{i}" for b, _ in blocks() for i in (1, 2)]
    assert sorted(numerics.masks) == sorted(expected) and list(numerics.choices) == ["maxpool"]

    class AllOn(Frozen):
        def kink_mask(self, h, key):
            return np.ones(h.shape, dtype=bool)

    assert reference.forward_backward(params, data, cfg, numerics=AllOn())[0] != loss


def test_names_shapes_and_dtypes(case):
    params, data, cfg = case
    loss, grads, branch, observed = reference.forward_backward(params, data, cfg)
    assert branch is None and abs(loss - np.log(10)) < 1.0
    assert tuple(grads) == PARAM_NAMES
    assert all(grads[n].shape == params[n].shape for n in PARAM_NAMES)
    acts, state = observed["activations"], observed["state"]
    assert tuple(acts) == ACTIVATION_NAMES and tuple(state) == STATE_NAMES
    shapes = {
        "conv1": (4, 64, 16, 16),
        "relu": (4, 64, 16, 16),
        "maxpool": (4, 64, 8, 8),
        "layer1.1": (4, 64, 8, 8),
        "layer2.0.downsample.1": (4, 128, 4, 4),
        "layer3.0": (4, 256, 2, 2),
        "layer4.1.bn2": (4, 512, 1, 1),
        "avgpool": (4, 512),
        "fc": (4, 10),
    }
    assert {n: acts[n].shape for n in shapes} == shapes
    assert all(state[f"{bn}.running_var"].shape == (c,) for bn, c in batchnorms())
    np.testing.assert_array_equal(acts["relu"], np.maximum(acts["bn1"], 0))
    assert reference.evaluate(params, state, data, cfg)["logits"].shape == (4, 10)


def test_float32_in_float32_out():
    st = SPEC.make_state(seed=5, dtype="float32")
    state = {k: v.astype(np.float32) for k, v in reference.initial_state(st.config).items()}
    loss, grads, _, observed = reference.forward_backward(
        st.params, st.data, st.config, state=state
    )
    arrays = [*grads.values(), *observed["activations"].values(), *observed["state"].values()]
    arrays.append(reference.evaluate(st.params, observed["state"], st.data, st.config)["logits"])
    assert np.asarray(loss).dtype == np.float32
    assert {a.dtype for a in arrays} == {np.dtype(np.float32)}


def check_running_stats(params, data, cfg, state) -> None:
    """The new running statistics of the stem's BatchNorm (n = 4*16*16) and of the last one
    (n = 4: the unbiased factor is 4/3) by hand from the recorded convolution outputs."""
    _, _, _, observed = reference.forward_backward(params, data, cfg, state=state)
    m = cfg["bn_momentum"]
    ddof = 1 if cfg["bn_unbiased_running_var"] else 0
    for conv, bn in (("conv1", "bn1"), ("layer4.1.conv2", "layer4.1.bn2")):
        h = observed["activations"][conv]
        per_channel = h.transpose(1, 0, 2, 3).reshape(h.shape[1], -1)
        mean = (1 - m) * state[f"{bn}.running_mean"] + m * per_channel.mean(axis=1)
        var = (1 - m) * state[f"{bn}.running_var"] + m * per_channel.var(axis=1, ddof=ddof)
        np.testing.assert_allclose(observed["state"][f"{bn}.running_mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(observed["state"][f"{bn}.running_var"], var, rtol=1e-12)


def some_state(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for name, value in reference.initial_state(SPEC.config).items():
        out[name] = (
            rng.standard_normal(value.shape) if "mean" in name else rng.random(value.shape) + 0.5
        )
    return out


@pytest.mark.parametrize("unbiased", [True, False])
def test_running_statistics_by_hand(case, unbiased):
    params, data, cfg = case
    cfg = {**cfg, "bn_unbiased_running_var": unbiased}
    check_running_stats(params, data, cfg, reference.initial_state(cfg))
    check_running_stats(params, data, cfg, some_state())


def test_none_state_is_the_initial_state(case):
    params, data, cfg = case
    given = reference.forward_backward(params, data, cfg, state=reference.initial_state(cfg))
    default = reference.forward_backward(params, data, cfg)
    for name in STATE_NAMES:
        np.testing.assert_array_equal(given[3]["state"][name], default[3]["state"][name])


def test_evaluation_with_the_batch_statistics_is_the_training_forward(case):
    """With momentum 1 and the biased variance, the new running statistics are exactly the
    batch's: the evaluation forward must then give the training forward's logits. With the
    initial statistics (mean 0, variance 1) it gives others, and leaves ``state`` alone."""
    params, data, cfg = case
    cfg1 = {**cfg, "bn_momentum": 1.0, "bn_unbiased_running_var": False}
    _, _, _, observed = reference.forward_backward(params, data, cfg1)
    logits = reference.evaluate(params, observed["state"], data, cfg1)["logits"]
    np.testing.assert_allclose(logits, observed["activations"]["fc"], rtol=1e-10, atol=1e-12)
    initial = reference.initial_state(cfg)
    other = reference.evaluate(params, initial, data, cfg)["logits"]
    assert np.abs(other - logits).max() > 1e-3
    assert all(np.all(initial[n] == (0.0 if "mean" in n else 1.0)) for n in STATE_NAMES)


# --- planted bugs that the checks above catch ----------------------------------------------


def test_a_biased_running_variance_under_an_unbiased_config_is_caught(case, monkeypatch):
    params, data, cfg = case
    assert cfg["bn_unbiased_running_var"]
    monkeypatch.setattr(layers.BatchStats, "unbiased_var", lambda self: self.var)
    with pytest.raises(AssertionError):
        check_running_stats(params, data, cfg, some_state())


def test_a_running_update_with_the_momentum_reversed_is_caught(case, monkeypatch):
    """torch's m weighs the batch (new = 0.9 old + 0.1 batch); Keras's momentum weighs the
    old value. A reference that read the config the other way round fails the hand check."""
    params, data, cfg = case
    right = reference.forward_backward

    def reversed_momentum(p, d, c, *args, **kwargs):
        return right(p, d, {**c, "bn_momentum": 1 - c["bn_momentum"]}, *args, **kwargs)

    monkeypatch.setattr(reference, "forward_backward", reversed_momentum)
    with pytest.raises(AssertionError):
        check_running_stats(params, data, cfg, some_state())


def test_a_wrong_convolution_backward_is_caught(case, monkeypatch):
    """The kernel's gradient with its spatial axes swapped (right shape, wrong values)."""
    params, data, cfg = case
    right = layers.conv2d

    def transposed_kernel_grad(x, w, stride=1, padding=0):
        y, back = right(x, w, stride, padding)

        def wrong(gy, input_grad=True):
            gx, gw = back(gy, input_grad)
            return gx, gw.transpose(0, 1, 3, 2)

        return y, wrong

    monkeypatch.setattr(layers, "conv2d", transposed_kernel_grad)
    with pytest.raises(AssertionError, match="d loss / d t"):
        directional_check(params, data, cfg, CONV_PARAMS, 3)


def test_a_batch_norm_backward_without_the_statistics_is_caught(case, monkeypatch):
    """BatchNorm's input gradient as if the batch statistics were constants (the
    evaluation-mode backward in the training step)."""
    params, data, cfg = case
    right = layers.batch_norm_train

    def constant_stats(x, gamma, beta, eps, one_pass=False):
        y, back, stats = right(x, gamma, beta, eps, one_pass)
        _, eval_back = layers.batch_norm_eval(x, gamma, beta, stats.mean, stats.var, eps)
        return y, eval_back, stats

    monkeypatch.setattr(layers, "batch_norm_train", constant_stats)
    with pytest.raises(AssertionError, match="d loss / d t"):
        directional_check(params, data, cfg, list(PARAM_NAMES), 0)


# --- against torchvision's resnet18 ---------------------------------------------------------


def test_one_step_against_torchvision(case):
    """Loss, gradients, activations, new running statistics and the evaluation logits of
    torchvision's own resnet18 (float64, the same canonical weights) against the reference."""
    torch = pytest.importorskip("torch")
    support = pytest.importorskip("equiv.support.torchvision")
    params, data, cfg = case
    try:
        net = support.resnet18(num_classes=cfg["classes"]).to(torch.float64)
    except ImportError as error:  # torchvision not installed
        pytest.skip(str(error))
    state = some_state(1)
    weights = {n: torch.tensor(v) for n, v in {**params, **state}.items()}
    for bn, _ in batchnorms():
        weights[f"{bn}.num_batches_tracked"] = torch.tensor(0)
    net.load_state_dict(weights, strict=True)
    net.train()
    modules, seen = dict(net.named_modules()), {}
    # a copy at once (the ReLUs are in-place), and only in the training forward
    handles = [
        modules[name].register_forward_hook(
            lambda m, i, out, name=name: seen.__setitem__(name, out.detach().clone())
        )
        for name in ACTIVATION_NAMES
    ]
    logits = net(torch.tensor(data["x"]))
    for handle in handles:
        handle.remove()
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(data["y"]).long())
    loss.backward()
    with torch.no_grad():
        net.eval()
        eval_logits = net(torch.tensor(data["x"])).numpy()

    ours_loss, grads, _, observed = reference.forward_backward(params, data, cfg, state=state)
    ours_eval = reference.evaluate(params, observed["state"], data, cfg)["logits"]

    def close(ours, theirs, what):
        theirs = np.asarray(theirs).reshape(np.shape(ours))
        scale = max(np.abs(theirs).max(), 1e-300)
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-11 * scale, err_msg=what)

    close(ours_loss, loss.item(), "loss")
    named = dict(net.named_parameters())
    for n in PARAM_NAMES:
        close(grads[n], named[n].grad.numpy(), n)
    for n in ACTIVATION_NAMES:
        close(observed["activations"][n], seen[n].numpy(), n)
    buffers = dict(net.named_buffers())
    for n in STATE_NAMES:
        close(observed["state"][n], buffers[n].numpy(), n)
    close(ours_eval, eval_logits, "evaluation logits")
