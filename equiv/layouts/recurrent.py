"""LSTM and GRU (one layer, one direction).

Canonical: torch's parameters with (in, out)-style kernels, so that every gate is
``x @ kernel_ih + bias_ih + h @ kernel_hh + bias_hh`` in equiv's (in, out) convention:

- LSTM: ``kernel_ih`` (in, 4H), ``kernel_hh`` (H, 4H), ``bias_ih``, ``bias_hh`` (4H,), gate
  blocks in torch's order i, f, g, o (torch.nn.LSTM docs: ``weight_ih_l0`` is W_ii|W_if|W_ig|W_io).
- GRU: ``kernel_ih`` (in, 3H), ``kernel_hh`` (H, 3H), ``bias_ih``, ``bias_hh`` (3H,), gate blocks
  in torch's order r, z, n, with n = tanh(x W_in + b_in + r * (h W_hn + b_hn)) (torch.nn.GRU docs).

Both biases stay canonical because torch trains both and the GRU's n gate keeps them apart.
Where a framework holds their sum, the sum is a derived tensor: Keras's LSTM ``bias`` is
``bias_ih + bias_hh`` (keras/src/layers/rnn/lstm.py: one bias, gate order i, f, c, o, the same
as torch's); Flax's LSTM cell holds it per gate on its ``h*`` Dense layers and its GRU cell
holds the r and z sums on ``ir``/``iz`` and keeps n's two biases apart
(flax/linen/recurrent.py). What is compared for them is the sum; each part's gradient is the
sum's gradient. And the training differs: torch's SGD moves each part by lr * g, so the sum by
2 lr * g, where Keras moves its one bias by lr * g; a port matches torch only with the Keras
bias's learning rate doubled (or torch's ``bias_hh`` frozen), and the comparison shows it.

Keras's GRU with ``reset_after=True`` (Keras 3's default; keras/src/layers/rnn/gru.py) is
torch's GRU exactly, gate blocks in the order z, r, h and ``bias`` (2, 3H) = [input bias;
recurrent bias]: invertible. ``reset_after=False`` computes (r * h) @ W_hh, not
r * (h @ W_hh + b_hn): another function, which no weights make torch's; refused.

Activations: canonical (N, T, F), batch first; torch's default ``batch_first=False`` is
(T, N, F) (``TIME_MAJOR``). torch's final state ``h_n`` is (layers * directions, N, H), Keras's
(``return_state=True``) (N, H).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from equiv.layouts.core import (
    SAME,
    TIME_MAJOR,
    Array,
    Layout,
    LayoutError,
    Observable,
    Rule,
    copy,
    derived,
    pack,
    split,
    summed,
    transpose,
)

LSTM_GATES = "ifgo"
GRU_GATES = "rzn"
#: the canonical (torch) gate blocks in Keras's GRU order z, r, h
KERAS_GRU_ORDER = (1, 0, 2)


def permute_gates(array: Array, order: Sequence[int], axis: int = -1) -> Array:
    """The gate blocks of ``array`` along ``axis``, reordered: block i of the result is block
    ``order[i]`` of the input."""
    blocks = np.split(array, len(order), axis=axis)
    return np.concatenate([blocks[i] for i in order], axis=axis)


def unpermute_gates(array: Array, order: Sequence[int], axis: int = -1) -> Array:
    """The inverse of ``permute_gates(..., order)``."""
    return permute_gates(array, [int(i) for i in np.argsort(order)], axis)


def _canonical(input_size: int, hidden_size: int, gates: int, bias: bool) -> dict:
    shapes = {
        "kernel_ih": (input_size, gates * hidden_size),
        "kernel_hh": (hidden_size, gates * hidden_size),
    }
    if bias:
        shapes |= {"bias_ih": (gates * hidden_size,), "bias_hh": (gates * hidden_size,)}
    return shapes


def _torch(
    kind: str,
    gates: int,
    input_size: int,
    hidden_size: int,
    bias: bool,
    layer: int,
    reverse: bool,
    batch_first: bool,
) -> Layout:
    suffix = f"_l{layer}" + ("_reverse" if reverse else "")
    g = gates * hidden_size
    framework = {f"weight_ih{suffix}": (g, input_size), f"weight_hh{suffix}": (g, hidden_size)}
    rules = [
        transpose("kernel_ih", f"weight_ih{suffix}", (1, 0)),
        transpose("kernel_hh", f"weight_hh{suffix}", (1, 0)),
    ]
    if bias:
        framework |= {f"bias_ih{suffix}": (g,), f"bias_hh{suffix}": (g,)}
        rules += [copy("bias_ih", f"bias_ih{suffix}"), copy("bias_hh", f"bias_hh{suffix}")]
    data = SAME if batch_first else TIME_MAJOR
    return Layout(
        f"torch.nn.{kind}({input_size}, {hidden_size}, bias={bias}, batch_first={batch_first})"
        f" layer {suffix[1:]}",
        _canonical(input_size, hidden_size, gates, bias),
        framework,
        tuple(rules),
        inputs=data,
        outputs=data,
    )


def torch_lstm(
    input_size: int,
    hidden_size: int,
    bias: bool = True,
    layer: int = 0,
    reverse: bool = False,
    batch_first: bool = True,
) -> Layout:
    """One layer and direction of ``torch.nn.LSTM(input_size, hidden_size, bias=,
    batch_first=)``: ``weight_ih_l{layer}`` (4H, in), ``weight_hh_l{layer}`` (4H, H),
    ``bias_ih_l{layer}``, ``bias_hh_l{layer}`` (``_reverse`` appended for ``reverse``; a layer
    above the first reads H * directions inputs). ``proj_size`` is not covered."""
    return _torch("LSTM", 4, input_size, hidden_size, bias, layer, reverse, batch_first)


def torch_gru(
    input_size: int,
    hidden_size: int,
    bias: bool = True,
    layer: int = 0,
    reverse: bool = False,
    batch_first: bool = True,
) -> Layout:
    """One layer and direction of ``torch.nn.GRU``: as ``torch_lstm``, with 3H gate rows."""
    return _torch("GRU", 3, input_size, hidden_size, bias, layer, reverse, batch_first)


_SUM_WHY = "{who} holds one bias where torch holds bias_ih and bias_hh: their sum"


def keras_lstm(input_size: int, hidden_size: int, bias: bool = True) -> Layout:
    """``keras.layers.LSTM(hidden_size, use_bias=bias)`` on ``input_size`` features (its
    activations are the canonical (N, T, F)): ``lstm_cell/kernel`` (in, 4H),
    ``lstm_cell/recurrent_kernel`` (H, 4H) as they are, ``lstm_cell/bias`` (4H,) =
    bias_ih + bias_hh, derived. Keras's defaults activation="tanh",
    recurrent_activation="sigmoid" are torch's; ``unit_forget_bias`` changes only the
    initial bias."""
    framework = {
        "lstm_cell/kernel": (input_size, 4 * hidden_size),
        "lstm_cell/recurrent_kernel": (hidden_size, 4 * hidden_size),
    }
    rules: list[Rule] = [
        copy("kernel_ih", "lstm_cell/kernel"),
        copy("kernel_hh", "lstm_cell/recurrent_kernel"),
    ]
    if bias:
        framework["lstm_cell/bias"] = (4 * hidden_size,)
        rules.append(
            summed(("bias_ih", "bias_hh"), "lstm_cell/bias", _SUM_WHY.format(who="Keras's LSTM"))
        )
    return Layout(
        f"keras.layers.LSTM({hidden_size}, use_bias={bias}) on {input_size}",
        _canonical(input_size, hidden_size, 4, bias),
        framework,
        tuple(rules),
        notes=("bias = bias_ih + bias_hh: SGD moves torch's sum twice as far as Keras's bias",)
        if bias
        else (),
    )


def keras_gru(
    input_size: int, hidden_size: int, bias: bool = True, reset_after: bool = True
) -> Layout:
    """``keras.layers.GRU(hidden_size, use_bias=bias, reset_after=True)``: ``gru_cell/kernel``
    (in, 3H), ``gru_cell/recurrent_kernel`` (H, 3H) with the gate blocks as z, r, h, and
    ``gru_cell/bias`` (2, 3H) = [bias_ih; bias_hh] in that order: invertible.
    ``reset_after=False`` is refused (another function than torch's)."""
    if not reset_after:
        raise LayoutError(
            "keras.layers.GRU(reset_after=False): computes (r * h) @ recurrent_kernel where "
            "torch's GRU computes r * (h @ W_hn + b_hn), another function that no weights make "
            "torch's; use reset_after=True (Keras 3's default), which is torch's exactly"
        )
    h3 = 3 * hidden_size
    order = KERAS_GRU_ORDER
    framework = {
        "gru_cell/kernel": (input_size, h3),
        "gru_cell/recurrent_kernel": (hidden_size, h3),
    }
    rules = [
        copy(
            "kernel_ih",
            "gru_cell/kernel",
            lambda a: permute_gates(a, order),
            lambda t: unpermute_gates(t, order),
        ),
        copy(
            "kernel_hh",
            "gru_cell/recurrent_kernel",
            lambda a: permute_gates(a, order),
            lambda t: unpermute_gates(t, order),
        ),
    ]
    if bias:
        framework["gru_cell/bias"] = (2, h3)
        rules.append(
            pack(
                ("bias_ih", "bias_hh"),
                "gru_cell/bias",
                lambda bi, bh: np.stack([permute_gates(bi, order), permute_gates(bh, order)]),
                lambda t: (unpermute_gates(t[0], order), unpermute_gates(t[1], order)),
            )
        )
    return Layout(
        f"keras.layers.GRU({hidden_size}, use_bias={bias}, reset_after=True) on {input_size}",
        _canonical(input_size, hidden_size, 3, bias),
        framework,
        tuple(rules),
    )


def _flax_kernels(
    source: str, prefixes: Sequence[str], rows: int, hidden_size: int
) -> tuple[dict, Rule]:
    targets = [f"params/{p}/kernel" for p in prefixes]
    rule = split(
        source,
        targets,
        lambda a: np.split(a, len(prefixes), axis=1),
        lambda *t: np.concatenate(t, axis=1),
    )
    return {t: (rows, hidden_size) for t in targets}, rule


def flax_lstm(input_size: int, hidden_size: int) -> Layout:
    """``flax.linen.LSTMCell(hidden_size)`` (and ``OptimizedLSTMCell``, the same parameters):
    one Dense per gate, ``params/i{g}/kernel`` (in, H) without bias and ``params/h{g}/kernel``
    (H, H) with ``params/h{g}/bias`` (H,) = the gate's bias_ih + bias_hh, for g in i, f, g, o.
    Flax's cell always has the biases (torch's ``bias=False`` is zeros there)."""
    h = hidden_size
    framework: dict = {}
    k_in, rule_in = _flax_kernels("kernel_ih", [f"i{g}" for g in LSTM_GATES], input_size, h)
    k_h, rule_h = _flax_kernels("kernel_hh", [f"h{g}" for g in LSTM_GATES], h, h)
    biases = [f"params/h{g}/bias" for g in LSTM_GATES]
    for g in LSTM_GATES:  # the cell's own order: ii, hi (kernel, bias), if, hf, ...
        framework[f"params/i{g}/kernel"] = k_in[f"params/i{g}/kernel"]
        framework[f"params/h{g}/kernel"] = k_h[f"params/h{g}/kernel"]
        framework[f"params/h{g}/bias"] = (h,)

    def pullback(*grads: Array) -> tuple[Array, Array]:
        g = np.concatenate(grads)
        return g, g

    sums = derived(
        ("bias_ih", "bias_hh"),
        biases,
        lambda bi, bh: np.split(bi + bh, 4),
        pullback,
        (Observable("bias_ih+bias_hh", lambda bi, bh: bi + bh, lambda *t: np.concatenate(t)),),
        _SUM_WHY.format(who="Flax's LSTM cell"),
    )
    return Layout(
        f"flax.linen.LSTMCell({hidden_size}) on {input_size}",
        _canonical(input_size, hidden_size, 4, True),
        framework,
        (rule_in, rule_h, sums),
        notes=("h*/bias = bias_ih + bias_hh per gate: SGD moves torch's sum twice as far",),
    )


def flax_gru(input_size: int, hidden_size: int) -> Layout:
    """``flax.linen.GRUCell(hidden_size)``: ``params/i{g}/kernel`` (in, H) with
    ``params/i{g}/bias``, ``params/h{g}/kernel`` (H, H), for g in r, z, n, and
    ``params/hn/bias``. r's and z's biases are bias_ih + bias_hh (derived), n's two are kept
    apart (n needs them so), so ``bias_ih[n]`` and ``bias_hh[n]`` are observed as they are."""
    h = hidden_size
    k_in, rule_in = _flax_kernels("kernel_ih", [f"i{g}" for g in GRU_GATES], input_size, h)
    k_h, rule_h = _flax_kernels("kernel_hh", [f"h{g}" for g in GRU_GATES], h, h)
    framework: dict = {}
    for g in GRU_GATES:  # the cell's own order: ir (kernel, bias), hr, iz, hz, in, hn
        framework[f"params/i{g}/kernel"] = k_in[f"params/i{g}/kernel"]
        framework[f"params/i{g}/bias"] = (h,)
        framework[f"params/h{g}/kernel"] = k_h[f"params/h{g}/kernel"]
        if g == "n":
            framework["params/hn/bias"] = (h,)
    targets = ("params/ir/bias", "params/iz/bias", "params/in/bias", "params/hn/bias")

    def forward(bi: Array, bh: Array) -> tuple[Array, ...]:
        (ir, iz, in_), (hr, hz, hn) = np.split(bi, 3), np.split(bh, 3)
        return ir + hr, iz + hz, in_, hn

    def pullback(g_r: Array, g_z: Array, g_in: Array, g_hn: Array) -> tuple[Array, Array]:
        return np.concatenate([g_r, g_z, g_in]), np.concatenate([g_r, g_z, g_hn])

    biases = derived(
        ("bias_ih", "bias_hh"),
        targets,
        forward,
        pullback,
        (
            Observable(
                "bias_ih[r,z]+bias_hh[r,z]",
                lambda bi, bh: bi[: 2 * h] + bh[: 2 * h],
                lambda r, z, _i, _h: np.concatenate([r, z]),
            ),
            Observable("bias_ih[n]", lambda bi, _bh: bi[2 * h :], lambda _r, _z, i, _h: i),
            Observable("bias_hh[n]", lambda _bi, bh: bh[2 * h :], lambda _r, _z, _i, hn: hn),
        ),
        "Flax's GRU cell holds one bias for each of r and z, added to both products",
    )
    return Layout(
        f"flax.linen.GRUCell({hidden_size}) on {input_size}",
        _canonical(input_size, hidden_size, 3, True),
        framework,
        (rule_in, rule_h, biases),
    )
