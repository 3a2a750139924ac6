"""The standard layouts against the real layers: every layout's framework tensors are the real
layer's, by name, in order and by shape (torch's ``state_dict``, Keras's ``layer.weights``).
Also the helpers the family tests (``tests/test_layouts_*.py``) load real layers with.

Keras runs on TensorFlow in this process (as in ``tests/test_resnet18_keras.py``: the backend's
``configure`` sets ``KERAS_BACKEND`` before Keras is first imported); a process whose Keras
already runs on another backend skips, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from equiv import layouts as L
from equiv.backends.registry import get_backend
from equiv.layouts import Layout, Rule

#: float64 margins: the frameworks compute the same sums in other orders
RTOL, ATOL = 1e-12, 1e-12


# -- helpers --------------------------------------------------------------------------------


def torch_or_skip():
    torch = pytest.importorskip("torch")
    return torch


def keras_or_skip():
    backend = get_backend("keras.tensorflow")
    if reason := backend.availability():
        pytest.skip(reason)
    backend.configure(1)
    import keras

    return keras


def draw(layout: Layout, seed: int = 0, scale: float = 0.5) -> dict[str, np.ndarray]:
    """Canonical float64 arrays; variances positive."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in layout.canonical.items():
        value = rng.standard_normal(shape) * scale
        out[name] = np.abs(value) + 0.5 if "var" in name else value
    return out


def assert_round_trips(layout: Layout) -> None:
    """Canonical -> framework -> canonical is bit-exact, in the canonical order, and the
    layout's own checks (inverses, observables, gradient pullbacks) hold on random arrays."""
    params = draw(layout)
    back = layout.to_canonical(layout.to_framework(params))
    assert list(back) == list(params)
    assert all(np.array_equal(back[n], params[n]) for n in params)
    layout.verify()


def planted(layout: Layout, *rules: Rule) -> Layout:
    """``layout`` with the rules making the same framework tensors as ``rules`` replaced by
    them: a wrong layout, declared as a user would (its own checks still run)."""
    made = {t for r in rules for t in r.targets}
    kept = tuple(r for r in layout.rules if not set(r.targets) & made)
    return Layout(
        f"{layout.name} (planted)",
        layout.canonical,
        layout.framework,
        kept + rules,
        layout.state,
        layout.ignored,
        layout.inputs,
        layout.outputs,
    )


def torch_load(module, layout: Layout, canonical: dict[str, np.ndarray]) -> None:
    """Loads through ``layout``: its names are the ``state_dict``'s (less ``ignored``), and
    ``load_state_dict`` checks every shape."""
    import torch

    native = layout.to_framework(canonical)
    result = module.load_state_dict({k: torch.from_numpy(v) for k, v in native.items()}, False)
    assert set(result.missing_keys) <= set(layout.ignored), result  # BatchNorm fills its own
    assert not result.unexpected_keys, result


def keras_names(layer) -> list[str]:
    """A built layer's weights as the layouts name them: paths after the layer's own name."""
    return [v.path.split("/", 1)[1] for v in layer.weights]


def keras_load(layer, layout: Layout, canonical: dict[str, np.ndarray]) -> None:
    """Loads through ``layout`` into a built layer: names and order checked here, shapes by
    ``set_weights``."""
    assert keras_names(layer) == list(layout.names)
    native = layout.to_framework(canonical)
    layer.set_weights([native[n] for n in layout.names])


def to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().numpy()
    return np.asarray(value)


def assert_same(a, b) -> None:
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=RTOL, atol=ATOL)


def assert_differs(a, b) -> None:
    """A planted wrong layout: the outputs differ far beyond float64 noise (or one is nan)."""
    a, b = to_numpy(a), to_numpy(b)
    assert a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-6)


# -- every layout is the real layer's, by name, order and shape ------------------------------


def _torch_cases() -> list[tuple[str, Callable[[], Layout], Callable]]:
    return [
        ("linear", lambda: L.torch_linear(3, 5), lambda nn, t: nn.Linear(3, 5)),
        (
            "linear_nobias",
            lambda: L.torch_linear(3, 5, False),
            lambda nn, t: nn.Linear(3, 5, False),
        ),
        ("conv1d", lambda: L.torch_conv(4, 6, 3, dims=1), lambda nn, t: nn.Conv1d(4, 6, 3)),
        (
            "conv2d_groups",
            lambda: L.torch_conv(4, 6, (3, 2), groups=2),
            lambda nn, t: nn.Conv2d(4, 6, (3, 2), groups=2),
        ),
        ("batchnorm", lambda: L.torch_batch_norm(3), lambda nn, t: nn.BatchNorm2d(3)),
        (
            "batchnorm_noaffine",
            lambda: L.torch_batch_norm(3, False),
            lambda nn, t: nn.BatchNorm1d(3, affine=False),
        ),
        ("layernorm", lambda: L.torch_layer_norm((2, 3)), lambda nn, t: nn.LayerNorm((2, 3))),
        ("embedding", lambda: L.torch_embedding(7, 3), lambda nn, t: nn.Embedding(7, 3)),
        (
            "lstm_2layers_bidirectional",
            lambda: [
                L.torch_lstm(3, 4),
                L.torch_lstm(3, 4, reverse=True),
                L.torch_lstm(8, 4, layer=1),
                L.torch_lstm(8, 4, layer=1, reverse=True),
            ],
            lambda nn, t: nn.LSTM(3, 4, num_layers=2, bidirectional=True),
        ),
        ("gru", lambda: L.torch_gru(3, 4), lambda nn, t: nn.GRU(3, 4)),
        ("gru_nobias", lambda: L.torch_gru(3, 4, False), lambda nn, t: nn.GRU(3, 4, bias=False)),
        (
            "mha",
            lambda: L.torch_multihead_attention(6, 2),
            lambda nn, t: nn.MultiheadAttention(6, 2),
        ),
        (
            "mha_kdim_vdim_nobias",
            lambda: L.torch_multihead_attention(6, 3, bias=False, kdim=4, vdim=5),
            lambda nn, t: nn.MultiheadAttention(6, 3, bias=False, kdim=4, vdim=5),
        ),
    ]


@pytest.mark.parametrize(("case", "make", "real"), _torch_cases(), ids=lambda c: c)
def test_torch_layouts_name_the_state_dict(case, make, real):
    torch = torch_or_skip()
    made = make()
    layouts = made if isinstance(made, list) else [made]
    names = [n for layout in layouts for n in [*layout.names, *layout.ignored]]
    shapes = [s for layout in layouts for s in layout.framework.values()]
    state = real(torch.nn, torch).state_dict()
    assert names == list(state)
    assert shapes == [tuple(v.shape) for k, v in state.items() if k != "num_batches_tracked"]


def _keras_cases():
    return [
        ("dense", lambda: L.keras_dense(3, 5), lambda k: k.layers.Dense(5), (2, 3)),
        (
            "conv1d",
            lambda: L.keras_conv(4, 6, 3, dims=1),
            lambda k: k.layers.Conv1D(6, 3),
            (1, 7, 4),
        ),
        (
            "conv2d_groups",
            lambda: L.keras_conv(4, 6, (3, 2), groups=2),
            lambda k: k.layers.Conv2D(6, (3, 2), groups=2),
            (1, 7, 7, 4),
        ),
        (
            "batchnorm",
            lambda: L.keras_batch_norm(3),
            lambda k: k.layers.BatchNormalization(),
            (2, 4, 4, 3),
        ),
        (
            "layernorm",
            lambda: L.keras_layer_norm(3),
            lambda k: k.layers.LayerNormalization(),
            (2, 3),
        ),
        ("embedding", lambda: L.keras_embedding(7, 3), lambda k: k.layers.Embedding(7, 3), (2,)),
        ("lstm", lambda: L.keras_lstm(3, 4), lambda k: k.layers.LSTM(4), (2, 5, 3)),
        ("gru", lambda: L.keras_gru(3, 4), lambda k: k.layers.GRU(4), (2, 5, 3)),
        (
            "gru_nobias",
            lambda: L.keras_gru(3, 4, False),
            lambda k: k.layers.GRU(4, use_bias=False),
            (2, 5, 3),
        ),
    ]


@pytest.mark.parametrize(("case", "make", "real", "shape"), _keras_cases(), ids=lambda c: c)
def test_keras_layouts_name_the_layer_weights(case, make, real, shape):
    keras = keras_or_skip()
    layout = make()
    layer = real(keras)
    layer.build(shape)
    assert keras_names(layer) == list(layout.names)
    assert [tuple(v.shape) for v in layer.weights] == list(layout.framework.values())


def test_keras_attention_layout_names_the_layer_weights():
    keras = keras_or_skip()
    layout = L.keras_multi_head_attention(6, 2, kdim=4, vdim=5)
    layer = keras.layers.MultiHeadAttention(2, 3)
    layer(np.zeros((1, 2, 6)), np.zeros((1, 3, 5)), key=np.zeros((1, 3, 4)))
    assert keras_names(layer) == list(layout.names)
    assert [tuple(v.shape) for v in layer.weights] == list(layout.framework.values())
