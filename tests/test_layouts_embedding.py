"""Embedding layouts: round trips; torch's ``nn.Embedding`` and Keras's ``Embedding`` loaded from
the same canonical table look up the same vectors, which a square table loaded transposed does
not (and a non-square one fails on shape)."""

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
    torch_load,
    torch_or_skip,
)

from equiv import layouts as L
from equiv.layouts import LayoutError, transpose


@pytest.mark.parametrize(
    "make", [L.torch_embedding, L.keras_embedding, L.flax_embedding], ids=lambda f: f.__name__
)
def test_round_trip_is_bit_exact(make):
    assert_round_trips(make(7, 3))


def test_a_transposed_table_fails_on_shape_when_not_square():
    with pytest.raises(LayoutError, match=r"framework 'embeddings' is \(7, 3\)"):
        planted(L.keras_embedding(7, 3), transpose("embeddings", "embeddings", (1, 0)))


def _lookups(keras_layout=None, n=4):
    torch, keras = torch_or_skip(), keras_or_skip()
    params = draw(L.torch_embedding(n, n))
    table_torch = torch.nn.Embedding(n, n, dtype=torch.float64)
    torch_load(table_torch, L.torch_embedding(n, n), params)
    table_keras = keras.layers.Embedding(n, n, dtype="float64")
    table_keras.build((None,))
    keras_load(table_keras, keras_layout or L.keras_embedding(n, n), params)
    ids = np.array([[0, 3, 1], [2, 2, 0]])
    with torch.no_grad():
        return table_torch(torch.from_numpy(ids)), table_keras(ids)


def test_torch_and_keras_look_up_the_same():
    assert_same(*_lookups())


def test_a_square_table_loaded_transposed_looks_up_other_vectors():
    wrong = planted(L.keras_embedding(4, 4), transpose("embeddings", "embeddings", (1, 0)))
    assert_differs(*_lookups(wrong))
