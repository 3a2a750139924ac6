"""LSTM and GRU layouts.

The canonical form is pinned by a numpy cell written from torch's documented equations; the
same canonical float64 weights loaded through the torch layouts into ``nn.LSTM``/``nn.GRU`` and
through the Keras layouts into ``LSTM``/``GRU`` give that cell's outputs over a short sequence,
and their gradients, mapped back to canonical names, agree (the gradient of Keras's summed LSTM
bias is the gradient of each of torch's two). The Flax layouts are checked against numpy cells
written from flax/linen/recurrent.py's equations (Flax is not installed here). Planted wrong
layouts (gates swapped, a kernel reshaped instead of transposed, GRU's biases swapped, a bias
dropped) each fail, and Keras's ``reset_after=False`` is shown to compute another function."""

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
from equiv.layouts import LayoutError, NotInvertible, copy, permute_gates, reshape

F, H, N, T = 3, 4, 2, 5


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm_cell(p, x):
    """torch.nn.LSTM docs' equations on the canonical parameters; x (N, T, F) -> (N, T, H)."""
    h = c = np.zeros((x.shape[0], p["kernel_hh"].shape[0]))
    out = []
    for t in range(x.shape[1]):
        z = x[:, t] @ p["kernel_ih"] + p["bias_ih"] + h @ p["kernel_hh"] + p["bias_hh"]
        i, f, g, o = np.split(z, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


def gru_cell(p, x):
    """torch.nn.GRU docs' equations on the canonical parameters."""
    h = np.zeros((x.shape[0], p["kernel_hh"].shape[0]))
    out = []
    for t in range(x.shape[1]):
        gi_r, gi_z, gi_n = np.split(x[:, t] @ p["kernel_ih"] + p["bias_ih"], 3, axis=1)
        gh_r, gh_z, gh_n = np.split(h @ p["kernel_hh"] + p["bias_hh"], 3, axis=1)
        r, z = sigmoid(gi_r + gh_r), sigmoid(gi_z + gh_z)
        n = np.tanh(gi_n + r * gh_n)
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out, axis=1)


def flax_lstm_cell(v, x):
    """flax.linen.LSTMCell's equations on its own parameters (``params/ii/kernel``...)."""
    h = c = np.zeros((x.shape[0], v["params/hi/kernel"].shape[0]))

    def gate(g, xt, h):
        k = v[f"params/h{g}/kernel"]
        return xt @ v[f"params/i{g}/kernel"] + (h @ k + v[f"params/h{g}/bias"])

    out = []
    for t in range(x.shape[1]):
        i, f = sigmoid(gate("i", x[:, t], h)), sigmoid(gate("f", x[:, t], h))
        g, o = np.tanh(gate("g", x[:, t], h)), sigmoid(gate("o", x[:, t], h))
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


def flax_gru_cell(v, x):
    """flax.linen.GRUCell's equations on its own parameters."""
    h = np.zeros((x.shape[0], v["params/hr/kernel"].shape[0]))

    def dense_i(g, xt):
        return xt @ v[f"params/i{g}/kernel"] + v[f"params/i{g}/bias"]

    out = []
    for t in range(x.shape[1]):
        r = sigmoid(dense_i("r", x[:, t]) + h @ v["params/hr/kernel"])
        z = sigmoid(dense_i("z", x[:, t]) + h @ v["params/hz/kernel"])
        hn = h @ v["params/hn/kernel"] + v["params/hn/bias"]
        n = np.tanh(dense_i("n", x[:, t]) + r * hn)
        h = (1.0 - z) * n + z * h
        out.append(h)
    return np.stack(out, axis=1)


def sequence(seed: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((N, T, F))


# -- numpy: round trips and observables -----------------------------------------------------

INVERTIBLE = [
    lambda: L.torch_lstm(F, H),
    lambda: L.torch_lstm(F, H, bias=False),
    lambda: L.torch_gru(F, H),
    lambda: L.keras_lstm(F, H, bias=False),
    lambda: L.keras_gru(F, H),
    lambda: L.keras_gru(F, H, bias=False),
]
DERIVED = [lambda: L.keras_lstm(F, H), lambda: L.flax_lstm(F, H), lambda: L.flax_gru(F, H)]


@pytest.mark.parametrize("make", INVERTIBLE, ids=lambda f: f().name)
def test_round_trip_is_bit_exact(make):
    layout = make()
    assert layout.invertible
    assert_round_trips(layout)


@pytest.mark.parametrize("make", DERIVED, ids=lambda f: f().name)
def test_derived_biases_are_observed_not_inverted(make):
    layout = make()
    params = draw(layout)
    native = layout.to_framework(params)
    with pytest.raises(NotInvertible, match="bias_ih"):
        layout.to_canonical(native)
    observed, expected = layout.observed(native), layout.observables(params)
    assert list(observed) == list(expected)
    assert all(np.array_equal(observed[k], expected[k]) for k in expected)
    layout.verify()


def test_the_observables_name_what_each_framework_holds():
    params = draw(L.torch_gru(F, H))
    assert list(L.keras_lstm(F, H).observables(draw(L.keras_lstm(F, H)))) == [
        "kernel_ih",
        "kernel_hh",
        "bias_ih+bias_hh",
    ]
    flax = L.flax_gru(F, H).observables(params)
    assert list(flax) == [
        "kernel_ih",
        "kernel_hh",
        "bias_ih[r,z]+bias_hh[r,z]",
        "bias_ih[n]",
        "bias_hh[n]",
    ]
    assert np.array_equal(flax["bias_hh[n]"], params["bias_hh"][2 * H :])


def test_flax_gru_gradients_pull_back_per_gate():
    layout = L.flax_gru(F, H)
    grads = {n: np.random.default_rng(5).standard_normal(s) for n, s in layout.framework.items()}
    canonical = layout.grads_to_canonical(grads)
    assert np.array_equal(canonical["bias_ih"][:H], grads["params/ir/bias"])
    assert np.array_equal(canonical["bias_hh"][:H], grads["params/ir/bias"])
    assert np.array_equal(canonical["bias_ih"][2 * H :], grads["params/in/bias"])
    assert np.array_equal(canonical["bias_hh"][2 * H :], grads["params/hn/bias"])


def test_keras_gru_holds_the_gates_as_z_r_h():
    params = draw(L.torch_gru(F, H))
    native = L.keras_gru(F, H).to_framework(params)
    r, z, n = np.split(params["kernel_ih"], 3, axis=1)
    assert np.array_equal(native["gru_cell/kernel"], np.concatenate([z, r, n], axis=1))
    assert np.array_equal(native["gru_cell/bias"][1], permute_gates(params["bias_hh"], (1, 0, 2)))


def test_gru_reset_after_false_is_refused_with_the_reason():
    with pytest.raises(LayoutError, match=r"reset_after=False.*r \* \(h @ W_hn \+ b_hn\)"):
        L.keras_gru(F, H, reset_after=False)


def test_a_dropped_bias_fails_at_declaration():
    """Keras's LSTM bias made of bias_ih alone: bias_hh is mapped nowhere."""
    with pytest.raises(LayoutError, match="canonical 'bias_hh' is mapped to no framework"):
        planted(L.keras_lstm(F, H), copy("bias_ih", "lstm_cell/bias"))


# -- numpy: the Flax layouts against Flax's equations ---------------------------------------


@pytest.mark.parametrize(
    ("layout", "cell", "flax_cell"),
    [(L.flax_lstm(F, H), lstm_cell, flax_lstm_cell), (L.flax_gru(F, H), gru_cell, flax_gru_cell)],
    ids=["lstm", "gru"],
)
def test_flax_layouts_compute_the_canonical_cell(layout, cell, flax_cell):
    params = draw(layout)
    x = sequence()
    assert_same(flax_cell(layout.to_framework(params), x), cell(params, x))


# -- the real layers ------------------------------------------------------------------------


def _torch_run(kind, params, x, batch_first=True):
    torch = torch_or_skip()
    cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
    make = L.torch_lstm if kind == "lstm" else L.torch_gru
    layout = make(F, H, batch_first=batch_first)
    module = cls(F, H, batch_first=batch_first, dtype=torch.float64)
    torch_load(module, layout, params)
    data = torch.from_numpy(layout.inputs.to_framework(x))
    y, _ = module(data)
    loss = (y**2).sum()
    loss.backward()
    grads = {k: p.grad.numpy() for k, p in module.named_parameters()}
    return layout.outputs.to_canonical(to_numpy(y)), layout.grads_to_canonical(grads)


def _keras_run(kind, params, x, layout=None, **kwargs):
    keras = keras_or_skip()
    import tensorflow as tf

    cls = keras.layers.LSTM if kind == "lstm" else keras.layers.GRU
    layout = layout or (L.keras_lstm if kind == "lstm" else L.keras_gru)(F, H)
    layer = cls(H, return_sequences=True, dtype="float64", **kwargs)
    layer.build((None, T, F))
    keras_load(layer, layout, params)
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y**2)
    grads = tape.gradient(loss, layer.trainable_weights)
    named = dict(zip(layout.names, (g.numpy() for g in grads), strict=True))
    return y.numpy(), layout.grads_to_canonical(named)


@pytest.mark.parametrize(("kind", "cell"), [("lstm", lstm_cell), ("gru", gru_cell)])
def test_torch_keras_and_the_canonical_cell_agree_with_gradients(kind, cell):
    params = draw(L.torch_lstm(F, H) if kind == "lstm" else L.torch_gru(F, H))
    x = sequence()
    y_torch, g_torch = _torch_run(kind, params, x)
    y_keras, g_keras = _keras_run(kind, params, x)
    assert_same(y_torch, cell(params, x))
    assert_same(y_keras, y_torch)
    assert list(g_torch) == list(g_keras) == list(params)
    for name in params:
        assert_same(g_keras[name], g_torch[name])
    if kind == "lstm":  # the summed bias's gradient is each part's
        assert np.array_equal(g_keras["bias_ih"], g_keras["bias_hh"])


def test_torch_time_major_layout_moves_the_sequence_axis():
    params = draw(L.torch_gru(F, H))
    x = sequence()
    assert_same(_torch_run("gru", params, x, batch_first=False)[0], gru_cell(params, x))


def _outputs_with(kind, layout):
    params = draw(L.torch_lstm(F, H) if kind == "lstm" else L.torch_gru(F, H))
    return _torch_run(kind, params, sequence())[0], _keras_run(kind, params, sequence(), layout)[0]


def test_lstm_gates_swapped_compute_another_lstm():
    """i and f exchanged in the Keras kernel: the same shape, another function."""
    order = (1, 0, 2, 3)
    wrong = planted(
        L.keras_lstm(F, H),
        copy(
            "kernel_ih",
            "lstm_cell/kernel",
            lambda a: permute_gates(a, order),
            lambda t: permute_gates(t, order),
        ),
    )
    assert_differs(*_outputs_with("lstm", wrong))


def test_a_kernel_reshaped_instead_of_transposed_computes_another_lstm():
    """torch's (4H, in) weight_ih from the (in, 4H) kernel by a reshape: the shape is right."""
    torch = torch_or_skip()
    params = draw(L.torch_lstm(F, H))
    wrong = planted(
        L.torch_lstm(F, H), reshape("kernel_ih", "weight_ih_l0", (4 * H, F), (F, 4 * H))
    )
    module = torch.nn.LSTM(F, H, batch_first=True, dtype=torch.float64)
    torch_load(module, wrong, params)
    with torch.no_grad():
        y, _ = module(torch.from_numpy(sequence()))
    assert_differs(y, lstm_cell(params, sequence()))


def test_gru_in_torchs_gate_order_computes_another_gru():
    wrong = planted(
        L.keras_gru(F, H),
        copy("kernel_ih", "gru_cell/kernel"),
        copy("kernel_hh", "gru_cell/recurrent_kernel"),
    )
    assert_differs(*_outputs_with("gru", wrong))


def test_gru_biases_swapped_compute_another_gru():
    """[bias_hh; bias_ih] for [bias_ih; bias_hh]: only n's treatment of them tells them apart."""
    wrong = planted(
        L.keras_gru(F, H),
        L.pack(
            ("bias_ih", "bias_hh"),
            "gru_cell/bias",
            lambda bi, bh: np.stack([permute_gates(bh, (1, 0, 2)), permute_gates(bi, (1, 0, 2))]),
            lambda t: (permute_gates(t[1], (1, 0, 2)), permute_gates(t[0], (1, 0, 2))),
        ),
    )
    assert_differs(*_outputs_with("gru", wrong))


def test_keras_reset_after_false_is_another_function_even_without_biases():
    """The refusal's reason, shown: no biases at all, the kernels in Keras's order, and
    reset_after=False still computes (r * h) @ W_hn, not r * (h @ W_hn)."""
    params = draw(L.torch_gru(F, H, bias=False))
    x = sequence()
    y_torch = _torch_run_nobias(params, x)
    y_keras, _ = _keras_run(
        "gru", params, x, L.keras_gru(F, H, bias=False), use_bias=False, reset_after=False
    )
    assert_same(y_torch, gru_cell({**params, "bias_ih": 0.0, "bias_hh": 0.0}, x))
    assert_differs(y_torch, y_keras)


def _torch_run_nobias(params, x):
    torch = torch_or_skip()
    module = torch.nn.GRU(F, H, bias=False, batch_first=True, dtype=torch.float64)
    torch_load(module, L.torch_gru(F, H, bias=False), params)
    with torch.no_grad():
        return to_numpy(module(torch.from_numpy(x))[0])
