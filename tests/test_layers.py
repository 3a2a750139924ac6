"""Every block of ``equiv.reference.layers`` against central finite differences in float64 (through
``equiv.reference.gradcheck.check_gradients``, the one check the references and the case kit use),
the
check itself failing on planted wrong backwards, and the optimizers that ``equiv.reference.optim``
adds
for issue 14 (SGD with momentum, AdamW in torch's and in Keras's form) against two steps
computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from equiv.reference import layers
from equiv.reference.gradcheck import check_gradients
from equiv.reference.optim import make_optimizer

RNG = np.random.default_rng(14)


def normal(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape)


def away_from_zero(*shape: int) -> np.ndarray:
    """Entries at least 0.1 from 0: a ReLU's kink lies farther than any difference step."""
    x = normal(*shape)
    return np.where(np.abs(x) < 0.1, np.sign(x) * 0.1 + x, x)


def check_block(block, inputs: dict, *, grad_names=None, samples: int = 12) -> int:
    """Check ``block(**inputs) -> (out, back)``: with a random projection r of the output,
    loss = sum(out * r), whose gradients are ``back(r)`` (in ``grad_names`` order; None
    entries skipped)."""
    out, back = block(**inputs)
    r = normal(*np.shape(out))
    grads = back(r)
    grads = grads if isinstance(grads, tuple) else (grads,)
    names = grad_names or list(inputs)
    analytic = {n: g for n, g in zip(names, grads, strict=True) if g is not None}
    return check_gradients(
        lambda moved: np.sum(block(**{**inputs, **moved})[0] * r),
        {n: inputs[n] for n in analytic},
        analytic,
        samples=samples,
    )


def test_dense_with_and_without_bias_and_with_batch_axes():
    assert check_block(layers.dense, {"x": normal(5, 4), "w": normal(4, 3), "b": normal(3)})
    x, w = normal(5, 4), normal(4, 3)
    _, back = layers.dense(x, w)
    gx, gw, gb = back(normal(5, 3))
    assert gb is None and gx.shape == x.shape and gw.shape == w.shape
    check_block(lambda x, w: layers.dense(x, w), {"x": x, "w": w}, grad_names=["x", "w", "b"])
    # leading (batch, time) axes: gw and gb sum over both
    inputs = {"x": normal(2, 3, 4), "w": normal(4, 5), "b": normal(5)}
    assert check_block(layers.dense, inputs) == 12 + 12 + 5


def test_dense_input_grad_false_skips_only_the_input_gradient():
    x, w, b, gy = normal(5, 4), normal(4, 3), normal(3), normal(5, 3)
    _, back = layers.dense(x, w, b)
    full, partial = back(gy), back(gy, input_grad=False)
    assert partial[0] is None
    np.testing.assert_array_equal(partial[1], full[1])
    np.testing.assert_array_equal(partial[2], full[2])


def test_relu_with_its_own_mask_and_a_given_one():
    h = away_from_zero(6, 5)
    check_block(layers.relu, {"h": h})
    mask = RNG.random((6, 5)) < 0.5  # a mask the numerics chose: the block follows it
    y, back = layers.relu(h, mask)
    np.testing.assert_array_equal(y, h * mask)
    check_block(lambda h: layers.relu(h, mask), {"h": h})


def test_multiply_broadcasting():
    check_block(layers.multiply, {"a": normal(4, 3), "b": normal(4, 3)})
    check_block(layers.multiply, {"a": normal(2, 4, 3), "b": normal(1, 3)})


def test_sigmoid():
    check_block(layers.sigmoid, {"h": 3 * normal(6, 5)})


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu(approximate):
    check_block(lambda h: layers.gelu(h, approximate), {"h": 2 * normal(6, 5)})


def test_gelu_values_exact_and_tanh():
    """At h = 1 and -2 against the formulas written out with ``math``."""
    h = np.array([1.0, -2.0])
    exact = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in h]
    c = math.sqrt(2 / math.pi)
    tanh = [0.5 * v * (1 + math.tanh(c * (v + 0.044715 * v**3))) for v in h]
    np.testing.assert_allclose(layers.gelu(h)[0], exact, rtol=1e-15)
    np.testing.assert_allclose(layers.gelu(h, approximate=True)[0], tanh, rtol=1e-15)
    assert abs(exact[0] - 0.8413447460685429) < 1e-15  # Phi(1), tables
    assert 1e-5 < abs(tanh[0] - exact[0]) < 1e-3  # the two differ: a declared difference


def test_layer_norm_three_gradients_and_its_statistics():
    x, gamma, beta = normal(2, 4, 6) * 3 + 1, normal(6), normal(6)
    inputs = {"x": x, "gamma": gamma, "beta": beta, "eps": 1e-5}
    check_block(layers.layer_norm, inputs, grad_names=["x", "gamma", "beta"])
    y, _ = layers.layer_norm(x, np.ones(6), np.zeros(6), 1e-5)
    np.testing.assert_allclose(y.mean(axis=-1), 0.0, atol=1e-12)
    expected = np.var(x, axis=-1) / (np.var(x, axis=-1) + 1e-5)  # biased variance
    np.testing.assert_allclose(y.var(axis=-1), expected, rtol=1e-12)


def causal(t: int) -> np.ndarray:
    return np.tril(np.ones((t, t), dtype=bool))


@pytest.mark.parametrize("fill", [-np.inf, -1e9])
def test_attention_with_a_causal_mask_and_batch_axes(fill):
    q, k, v = normal(2, 3, 5, 4), normal(2, 3, 5, 4), normal(2, 3, 5, 6)
    check_block(
        lambda q, k, v: layers.softmax_attention(q, k, v, causal(5), fill),
        {"q": q, "k": k, "v": v},
    )
    out, _ = layers.softmax_attention(q, k, v, causal(5), fill)
    # row 0 attends only to position 0; no later position leaks into earlier rows
    np.testing.assert_allclose(out[..., 0, :], v[..., 0, :], rtol=1e-12)
    v_later = v.copy()
    v_later[..., 3:, :] += 100.0
    np.testing.assert_array_equal(
        layers.softmax_attention(q, k, v_later, causal(5), fill)[0][..., :3, :], out[..., :3, :]
    )


def test_attention_without_mask_against_the_formula_and_with_broadcast_keys():
    q, k, v = normal(3, 4), normal(5, 4), normal(5, 2)
    s = q @ k.T / 2.0
    p = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(layers.softmax_attention(q, k, v)[0], p @ v, rtol=1e-12)
    # keys and values shared by a batch of queries: their gradients sum over it
    check_block(layers.softmax_attention, {"q": normal(2, 3, 4), "k": k, "v": v})


def test_losses_and_their_scaled_backward():
    pred, target = normal(5, 3), normal(5, 3)
    for loss_fn, expected in (
        (layers.mse, np.mean((pred - target) ** 2)),
        (layers.sum_of_squares, np.sum((pred - target) ** 2)),
    ):
        loss, back = loss_fn(pred, target)
        assert loss == expected
        check_gradients(
            lambda m, f=loss_fn: f(m["pred"], target)[0], {"pred": pred}, {"pred": back()}
        )
        np.testing.assert_allclose(back(3.0), 3.0 * back(), rtol=1e-15)


def test_softmax_cross_entropy_against_the_naive_formula_and_stable_at_large_logits():
    logits, labels = 3 * normal(6, 4), RNG.integers(0, 4, size=6)
    loss, back = layers.softmax_cross_entropy(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    naive = -np.mean(np.log(p[np.arange(6), labels]))
    assert abs(loss - naive) <= 1e-14 * abs(naive)
    check_gradients(
        lambda m: layers.softmax_cross_entropy(m["logits"], labels)[0],
        {"logits": logits},
        {"logits": back()},
    )
    np.testing.assert_allclose(back(0.5), 0.5 * back(), rtol=1e-15)
    # batch and time axes: the mean is over every position
    logits3, labels3 = normal(2, 3, 4), RNG.integers(0, 4, size=(2, 3))
    _, back3 = layers.softmax_cross_entropy(logits3, labels3)
    check_gradients(
        lambda m: layers.softmax_cross_entropy(m["l"], labels3)[0], {"l": logits3}, {"l": back3()}
    )
    big, _ = layers.softmax_cross_entropy(logits + 1000.0, labels)
    assert np.isfinite(big) and abs(big - naive) <= 1e-12 * abs(naive)


BLOCKS_FLOAT32 = [
    ("dense", lambda a: layers.dense(a, a[:4].T.copy(), a[0, :4])),
    ("relu", lambda a: layers.relu(a)),
    ("sigmoid", lambda a: layers.sigmoid(a)),
    ("gelu", lambda a: layers.gelu(a)),
    ("gelu_tanh", lambda a: layers.gelu(a, approximate=True)),
    ("layer_norm", lambda a: layers.layer_norm(a, a[0], a[1], 1e-5)),
    ("attention", lambda a: layers.softmax_attention(a, a, a, causal(5))),
    ("mse", lambda a: layers.mse(a, a * 0.5)),
    ("sum_of_squares", lambda a: layers.sum_of_squares(a, a * 0.5)),
]


@pytest.mark.parametrize("name,block", BLOCKS_FLOAT32, ids=[b[0] for b in BLOCKS_FLOAT32])
def test_a_float32_block_computes_in_float32(name, block):
    """The calibration's float32 shadow runs the same blocks: no float64 may creep in."""
    a = normal(5, 5).astype(np.float32)
    out, back = block(a)
    grads = back(np.ones_like(out)) if np.ndim(out) else back()
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert np.asarray(out).dtype == np.float32, name
    assert all(g.dtype == np.float32 for g in grads if g is not None), name
    ce, ce_back = layers.softmax_cross_entropy(a, np.arange(5) % 5)
    assert np.asarray(ce).dtype == ce_back().dtype == np.float32


# --- the check can fail: planted wrong backwards -------------------------------------------


def layer_norm_without_the_mean_term(x, gamma, beta, eps):
    """Forgets that the mean depends on x: gx lacks the -mean(gxhat) term."""
    y, right = layers.layer_norm(x, gamma, beta, eps)
    rstd = 1.0 / np.sqrt(x.var(axis=-1, keepdims=True) + eps)

    def back(gy):
        gx, ggamma, gbeta = right(gy)
        return gx + rstd * (gy * gamma).mean(axis=-1, keepdims=True), ggamma, gbeta

    return y, back


def attention_without_the_scale_in_backward(q, k, v, mask=None):
    """Forgets 1/sqrt(d) in the scores' gradient."""
    out, right = layers.softmax_attention(q, k, v, mask)
    d = q.shape[-1]

    def back(gout):
        gq, gk, gv = right(gout)
        return gq * math.sqrt(d), gk * math.sqrt(d), gv

    return out, back


def gelu_tanh_with_the_exact_derivative(h):
    """The tanh GELU's forward with the exact GELU's backward: close, and still wrong."""
    y, _ = layers.gelu(h, approximate=True)
    _, exact_back = layers.gelu(h)
    return y, exact_back


def test_planted_wrong_backwards_are_caught():
    with pytest.raises(AssertionError, match="d loss / d x"):
        check_block(
            layer_norm_without_the_mean_term,
            {"x": normal(3, 6) + 2.0, "gamma": normal(6), "beta": normal(6), "eps": 1e-5},
            grad_names=["x", "gamma", "beta"],
        )
    with pytest.raises(AssertionError, match="d loss / d q"):
        check_block(
            lambda q, k, v: attention_without_the_scale_in_backward(q, k, v, causal(5)),
            {"q": normal(2, 5, 4), "k": normal(2, 5, 4), "v": normal(2, 5, 3)},
        )
    with pytest.raises(AssertionError, match="d loss / d h"):
        check_block(gelu_tanh_with_the_exact_derivative, {"h": 2 * normal(6, 5)})


def test_check_gradients_rejects_a_gradient_of_the_wrong_shape():
    x = normal(3, 2)
    with pytest.raises(AssertionError):
        check_gradients(lambda m: np.sum(m["x"] ** 2), {"x": x}, {"x": 2 * x.T})


# --- optimizers: two steps by hand ---------------------------------------------------------

P0, G1, G2 = 1.0, 0.5, -0.25


def two_steps(cfg: dict) -> list[float]:
    opt = make_optimizer(cfg)
    p = {"w": np.array([P0])}
    out = []
    for g in (G1, G2):
        p = opt.step(p, {"w": np.array([g])})
        out.append(float(p["w"][0]))
    return out


def test_sgd_with_momentum_in_torchs_form():
    lr, mu = 0.1, 0.9
    buf1 = G1  # the first step's buffer is the gradient itself
    p1 = P0 - lr * buf1
    buf2 = mu * buf1 + G2
    p2 = p1 - lr * buf2
    assert two_steps({"lr": lr, "momentum": mu}) == pytest.approx([p1, p2], rel=1e-15)
    assert two_steps({"lr": lr}) == [P0 - lr * G1, P0 - lr * G1 - lr * G2]


def test_sgd_without_momentum_is_todays_update_bit_for_bit():
    p, g = {"w": normal(4, 3)}, {"w": normal(4, 3)}
    for cfg in ({"lr": 0.1}, {"lr": 0.1, "momentum": 0.0}):
        np.testing.assert_array_equal(make_optimizer(cfg).step(p, g)["w"], p["w"] - 0.1 * g["w"])


def test_adamw_in_torchs_form():
    lr, wd, b1, b2, eps = 0.1, 0.1, 0.9, 0.999, 1e-8
    p, m, v, expected = P0, 0.0, 0.0, []
    for t, g in ((1, G1), (2, G2)):
        p = p * (1 - lr * wd)  # decoupled: a factor, before the Adam update
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1**t)) / (math.sqrt(v / (1 - b2**t)) + eps)
        expected.append(p)
    cfg = {"optimizer": "adamw", "lr": lr, "weight_decay": wd, "epsilon": eps}
    assert two_steps(cfg) == pytest.approx(expected, rel=1e-14)
    assert two_steps({**cfg, "weight_decay": 0.0}) == two_steps({**cfg, "optimizer": "adam"})


def test_adamw_in_keras_form():
    lr, wd, b1, b2, eps = 0.1, 0.1, 0.9, 0.999, 1e-7
    p, m, v, expected = P0, 0.0, 0.0, []
    for t, g in ((1, G1), (2, G2)):
        p = p - p * wd * lr  # _apply_weight_decay, before update_step
        alpha = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        p = p - m * alpha / (math.sqrt(v) + eps)
        expected.append(p)
    cfg = {"optimizer": "adamw_epsilon_hat", "lr": lr, "weight_decay": wd, "epsilon": eps}
    assert two_steps(cfg) == pytest.approx(expected, rel=1e-14)
    no_decay = {**cfg, "weight_decay": 0.0, "optimizer": "adam_epsilon_hat"}
    assert two_steps({**cfg, "weight_decay": 0.0}) == two_steps(no_decay)


def test_momentum_and_adamw_match_torch():
    """The reference's rules against torch.optim itself, three steps in float64."""
    torch = pytest.importorskip("torch")
    p0 = normal(4, 3)
    grads = [normal(4, 3) for _ in range(3)]
    for cfg, make in (
        ({"lr": 0.1, "momentum": 0.9}, lambda w: torch.optim.SGD([w], lr=0.1, momentum=0.9)),
        (
            {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.05, "epsilon": 1e-8},
            lambda w: torch.optim.AdamW([w], lr=0.01, weight_decay=0.05, eps=1e-8),
        ),
    ):
        w = torch.tensor(p0, requires_grad=True)
        opt, ours, p = make(w), make_optimizer(cfg), {"w": p0}
        for g in grads:
            w.grad = torch.tensor(g)
            opt.step()
            p = ours.step(p, {"w": g})
        np.testing.assert_allclose(p["w"], w.detach().numpy(), rtol=1e-13, atol=1e-15)


# --- convolutional blocks (resnet18) -------------------------------------------------------


def naive_conv2d(x: np.ndarray, w: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """The convolution written out as loops over every output element."""
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.zeros((n, c, h + 2 * padding, wd + 2 * padding))
    xp[:, :, padding : padding + h, padding : padding + wd] = x
    ho, wo = (h + 2 * padding - k) // stride + 1, (wd + 2 * padding - k) // stride + 1
    y = np.zeros((n, o, ho, wo))
    for b in range(n):
        for f in range(o):
            for i in range(ho):
                for j in range(wo):
                    patch = xp[b, :, i * stride : i * stride + k, j * stride : j * stride + k]
                    y[b, f, i, j] = np.sum(patch * w[f])
    return y


@pytest.mark.parametrize("k,stride,padding", [(3, 2, 1), (3, 1, 1), (1, 2, 0), (5, 2, 2)])
def test_conv2d_forward_against_loops(k, stride, padding):
    x, w = normal(2, 3, 7, 7), normal(4, 3, k, k)
    y, _ = layers.conv2d(x, w, stride, padding)
    np.testing.assert_allclose(y, naive_conv2d(x, w, stride, padding), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("k,stride,padding", [(3, 2, 1), (3, 1, 1), (1, 2, 0), (7, 2, 3)])
def test_conv2d_gradients(k, stride, padding):
    inputs = {"x": normal(2, 3, 8, 8), "w": normal(4, 3, k, k)}
    check_block(lambda x, w: layers.conv2d(x, w, stride, padding), inputs, samples=20)


def test_conv2d_input_grad_false_skips_only_the_input_gradient():
    x, w, gy = normal(2, 3, 6, 6), normal(4, 3, 3, 3), normal(2, 4, 3, 3)
    _, back = layers.conv2d(x, w, 2, 1)
    (gx, gw), (none, gw2) = back(gy), back(gy, input_grad=False)
    assert none is None and gx.shape == x.shape
    np.testing.assert_array_equal(gw, gw2)


def test_batch_norm_train_three_gradients_and_its_statistics():
    x = normal(3, 4, 5, 5) * 2 + 1
    inputs = {"x": x, "gamma": normal(4), "beta": normal(4), "eps": 1e-5}
    check_block(
        lambda **kw: layers.batch_norm_train(**kw)[:2], inputs, grad_names=["x", "gamma", "beta"]
    )
    y, _, stats = layers.batch_norm_train(x, np.ones(4), np.zeros(4), 1e-5)
    per_channel = x.transpose(1, 0, 2, 3).reshape(4, -1)
    np.testing.assert_allclose(stats.mean, per_channel.mean(axis=1), rtol=1e-14)
    np.testing.assert_allclose(stats.var, per_channel.var(axis=1), rtol=1e-13)  # biased
    np.testing.assert_allclose(stats.unbiased_var(), per_channel.var(axis=1, ddof=1), rtol=1e-13)
    assert stats.count == 3 * 5 * 5
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-13)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), stats.var / (stats.var + 1e-5), rtol=1e-12)


def test_batch_norm_eval_is_the_affine_map_of_the_running_statistics():
    x, gamma, beta = normal(2, 3, 4, 4), normal(3), normal(3)
    mean, var = normal(3), RNG.random(3) + 0.5
    y, _ = layers.batch_norm_eval(x, gamma, beta, mean, var, 1e-5)
    c = (slice(None), None, None)
    expected = (x - mean[c]) / np.sqrt(var[c] + 1e-5) * gamma[c] + beta[c]
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=1e-15)
    check_block(
        lambda x, gamma, beta: layers.batch_norm_eval(x, gamma, beta, mean, var, 1e-5),
        {"x": x, "gamma": gamma, "beta": beta},
    )


def test_max_pool2d_values_gradient_and_overlapping_windows():
    x = normal(2, 3, 7, 7)  # distinct entries: no tie within a difference step
    y, back = layers.max_pool2d(x, 3, 2, 1)
    assert y.shape == (2, 3, 4, 4)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    for i in range(4):
        for j in range(4):
            window = xp[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            np.testing.assert_array_equal(y[:, :, i, j], window.max(axis=(2, 3)))
    check_block(lambda x: layers.max_pool2d(x, 3, 2, 1), {"x": x}, samples=40)
    # an element that is the maximum of two overlapping windows receives both gradients
    one = np.zeros((1, 1, 5, 5))
    one[0, 0, 1, 1] = 1.0  # in the windows at rows 0-2 and 2-4 of the padded 7 x 7, cols too
    _, back = layers.max_pool2d(one, 3, 2, 1)
    gx = back(np.ones((1, 1, 3, 3)))
    assert gx[0, 0, 1, 1] == 4.0 and gx.sum() == 9.0
    # padding with -inf: an all-negative input's maximum is never a padded position
    yn, _ = layers.max_pool2d(-np.abs(x) - 1.0, 3, 2, 1)
    assert np.all(yn <= -1.0)


def test_max_pool2d_follows_its_choice_hook():
    """The caller's choice picks the element (here: the last of each window's k*k) and the
    gradient goes there, not to the maximum."""
    x = normal(1, 2, 4, 4)
    seen = []

    def last(windows):
        seen.append(windows.shape)
        return np.full(windows.shape[:-1], windows.shape[-1] - 1)

    y, back = layers.max_pool2d(x, 2, 2, 0, choice=last)
    assert seen == [(1, 2, 2, 2, 4)]
    np.testing.assert_array_equal(y, x[:, :, 1::2, 1::2])
    gy = normal(1, 2, 2, 2)
    gx = back(gy)
    np.testing.assert_array_equal(gx[:, :, 1::2, 1::2], gy)
    assert np.count_nonzero(gx) == gy.size
    # ties: the first maximum by default (torch's CPU kernel), the hook may choose another
    flat = np.zeros((1, 1, 2, 2))
    assert layers.max_pool2d(flat, 2, 2)[1](np.ones((1, 1, 1, 1)))[0, 0, 0, 0] == 1.0


def test_global_avg_pool():
    x = normal(2, 3, 4, 5)
    y, _ = layers.global_avg_pool(x)
    np.testing.assert_allclose(y, x.mean(axis=(2, 3)), rtol=1e-14)
    check_block(layers.global_avg_pool, {"x": x})


CONV_BLOCKS_FLOAT32 = [
    ("conv2d", lambda a: layers.conv2d(a, a[:, :, :3, :3].copy(), 2, 1)),
    (
        "batch_norm_train",
        lambda a: layers.batch_norm_train(a, a[0, :, 0, 0], a[0, :, 0, 1], 1e-5)[:2],
    ),
    (
        "batch_norm_eval",
        lambda a: layers.batch_norm_eval(
            a, a[0, :, 0, 0], a[0, :, 0, 1], a[1, :, 0, 0], a[1, :, 0, 1] ** 2, 1e-5
        ),
    ),
    ("max_pool2d", lambda a: layers.max_pool2d(a, 3, 2, 1)),
    ("global_avg_pool", lambda a: layers.global_avg_pool(a)),
]


@pytest.mark.parametrize("name,block", CONV_BLOCKS_FLOAT32, ids=[b[0] for b in CONV_BLOCKS_FLOAT32])
def test_a_float32_conv_block_computes_in_float32(name, block):
    a = normal(2, 2, 6, 6).astype(np.float32)
    out, back = block(a)
    grads = back(np.ones_like(out))
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert out.dtype == np.float32, name
    assert all(g.dtype == np.float32 for g in grads if g is not None), name
    if name == "batch_norm_train":
        stats = layers.batch_norm_train(a, a[0, :, 0, 0], a[0, :, 0, 1], 1e-5)[2]
        assert stats.mean.dtype == stats.var.dtype == stats.unbiased_var().dtype == np.float32


# --- planted wrong backwards of the convolutional blocks -----------------------------------


def conv2d_with_a_flipped_kernel_in_backward(x, w, stride, padding):
    """The input's gradient through the kernel rotated by 180 degrees where it should not
    be (a transposed convolution written as a correlation with w, then flipped twice)."""
    y, _ = layers.conv2d(x, w, stride, padding)
    _, right = layers.conv2d(x, w[:, :, ::-1, ::-1].copy(), stride, padding)

    def back(gy):
        return right(gy)[0], layers.conv2d(x, w, stride, padding)[1](gy)[1]

    return y, back


def conv2d_with_the_kernel_gradient_transposed(x, w, stride, padding):
    """The kernel's gradient with its spatial axes swapped (kh for kw): the right shape for
    a square kernel, and wrong."""
    y, right = layers.conv2d(x, w, stride, padding)

    def back(gy):
        gx, gw = right(gy)
        return gx, gw.transpose(0, 1, 3, 2)

    return y, back


def batch_norm_without_the_variance_term(x, gamma, beta, eps):
    """Forgets that the variance depends on x (the -xhat mean(gxhat xhat) term)."""
    y, right, _ = layers.batch_norm_train(x, gamma, beta, eps)
    xhat = (y - beta.reshape(1, -1, 1, 1)) / gamma.reshape(1, -1, 1, 1)
    rstd = 1.0 / np.sqrt(x.var(axis=(0, 2, 3), keepdims=True) + eps)

    def back(gy):
        gx, ggamma, gbeta = right(gy)
        gxhat = gy * gamma.reshape(1, -1, 1, 1)
        return gx + rstd * xhat * (gxhat * xhat).mean(axis=(0, 2, 3), keepdims=True), ggamma, gbeta

    return y, back


def max_pool_routing_to_the_window_start(x, k, stride, padding):
    """The right maxima forward, the gradient sent to each window's first element."""
    y, _ = layers.max_pool2d(x, k, stride, padding)
    _, wrong = layers.max_pool2d(
        x, k, stride, padding, choice=lambda w: np.zeros(w.shape[:-1], int)
    )
    return y, wrong


def test_planted_wrong_conv_backwards_are_caught():
    with pytest.raises(AssertionError, match="d loss / d x"):
        check_block(
            lambda x, w: conv2d_with_a_flipped_kernel_in_backward(x, w, 1, 1),
            {"x": normal(2, 2, 5, 5), "w": normal(3, 2, 3, 3)},
        )
    with pytest.raises(AssertionError, match="d loss / d w"):
        check_block(
            lambda x, w: conv2d_with_the_kernel_gradient_transposed(x, w, 2, 1),
            {"x": normal(2, 2, 5, 5), "w": normal(3, 2, 3, 3)},
            grad_names=["x", "w"],
            samples=30,
        )
    with pytest.raises(AssertionError, match="d loss / d x"):
        check_block(
            batch_norm_without_the_variance_term,
            {"x": normal(3, 4, 3, 3) * 2 + 1, "gamma": normal(4), "beta": normal(4), "eps": 1e-5},
            grad_names=["x", "gamma", "beta"],
        )
    with pytest.raises(AssertionError, match="d loss / d x"):
        check_block(
            lambda x: max_pool_routing_to_the_window_start(x, 3, 2, 1),
            {"x": normal(1, 2, 5, 5)},
            samples=50,
        )


def test_batch_norm_one_pass_variance_is_the_same_function_and_cancels_in_float32():
    """Keras 3 on torch's moments: mean(x^2) - mean^2. Exact arithmetic gives the centred
    variance (float64: to rounding); in float32 it cancels where the mean dwarfs the spread,
    which is what the calibration's float32 shadow of that variant must reproduce."""
    import numpy as np

    from equiv.reference.layers import batch_norm_train

    rng = np.random.default_rng(0)
    gamma, beta = np.ones(3), np.zeros(3)
    x = rng.standard_normal((4, 3, 2, 2)) + 10.0
    two = batch_norm_train(x, gamma, beta, 1e-5)[2].var
    one = batch_norm_train(x, gamma, beta, 1e-5, one_pass=True)[2].var
    np.testing.assert_allclose(one, two, rtol=1e-12)
    x32 = x.astype(np.float32)
    two32 = batch_norm_train(x32, gamma.astype(np.float32), beta.astype(np.float32), 1e-5)[2].var
    one32 = batch_norm_train(x32, gamma.astype(np.float32), beta.astype(np.float32), 1e-5, True)
    err_two = np.max(np.abs(two32 - two) / two)
    err_one = np.max(np.abs(one32[2].var - two) / two)
    assert err_one > 10 * err_two, (err_one, err_two)


def test_only_keras_on_torch_declares_the_one_pass_variance():
    from equiv.contract.case import get_case

    spec = get_case("resnet18")
    declared = {b: spec.explanations_for(b, "float32") for b in ("keras.torch", "keras.jax")}
    variants = {b: {k: v for e in es for k, v in e.variant.items()} for b, es in declared.items()}
    assert variants["keras.torch"].get("bn_variance") == "one_pass"
    assert "bn_variance" not in variants["keras.jax"]
