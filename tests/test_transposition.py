"""The fast contiguous copy of a transposed view (``equiv.layouts.transposition``) and its use:
the same bytes as numpy's, and every array a comparison reads contiguous."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from equiv.checking.compare import contiguous_arrays
from equiv.checking.steplog import digest
from equiv.contract.records import StepRecord
from equiv.layouts.transposition import contiguous


@pytest.mark.parametrize("ndim", [2, 3, 4, 5])
def test_every_permutation_copies_the_same_bytes_as_numpy(ndim):
    rng = np.random.default_rng(ndim)
    for _ in range(12):
        shape = tuple(int(s) for s in rng.integers(2, 6, ndim))
        x = rng.standard_normal(shape).astype(rng.choice([np.float32, np.float64]))
        for axes in itertools.permutations(range(ndim)):
            view = x.transpose(axes)
            copied = contiguous(view)
            assert copied.flags.c_contiguous
            assert copied.shape == view.shape and copied.dtype == view.dtype
            assert copied.tobytes() == np.ascontiguousarray(view).tobytes(), (shape, axes)


def test_a_channels_last_kernel_read_canonical():
    hwio = np.random.default_rng(0).standard_normal((3, 3, 8, 16)).astype(np.float32)
    oihw = contiguous(hwio.transpose(3, 2, 0, 1))
    assert oihw.shape == (16, 8, 3, 3)
    assert oihw[5, 2, 1, 0] == hwio[1, 0, 2, 5]


@pytest.mark.parametrize(
    "view",
    [
        np.arange(240.0).reshape(6, 8, 5)[:, ::2],  # a slice
        np.arange(240.0).reshape(6, 8, 5)[::-1],  # negative strides
        np.broadcast_to(np.arange(5.0), (4, 5)),  # a broadcast
        np.arange(240.0).reshape(6, 8, 5).T[1:],  # a slice of a transpose
        np.arange(24.0).reshape(1, 4, 6).transpose(2, 0, 1),  # an axis of one
        np.arange(10.0),  # contiguous already: returned as it is
        np.zeros((0, 3)).T,
        np.array(2.5),  # 0-d stays 0-d (a loaded previous loss): TF refuses shape (1,)
    ],
)
def test_any_other_view_is_numpys_copy(view):
    copied = contiguous(view)
    assert copied.flags.c_contiguous
    assert copied.shape == view.shape
    assert copied.tobytes() == np.asarray(view).tobytes()


def test_a_records_views_are_compared_and_digested_as_contiguous_arrays():
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((3, 3, 4, 6)).transpose(3, 2, 0, 1)
    record = StepRecord(
        loss=0.5,
        grads={"w": kernel, "b": np.ones(6)},
        params={"w": kernel * 2},
        activations={"h": rng.standard_normal((2, 5, 5, 3)).transpose(0, 3, 1, 2)},
        state={"mean": np.zeros(3)},
        evaluation={"logits": [[1.0, 2.0]]},  # not an array: passed through as it is
    )
    out = contiguous_arrays(record)
    for group in ("grads", "params", "activations", "state"):
        for name, value in getattr(out, group).items():
            assert value.flags.c_contiguous, (group, name)
            np.testing.assert_array_equal(value, getattr(record, group)[name])
            assert digest(value) == digest(getattr(record, group)[name])
    assert out.grads["b"] is record.grads["b"]  # contiguous already: not copied
    assert out.evaluation["logits"] is record.evaluation["logits"]
    assert out.loss == record.loss


def test_the_lockstep_compares_contiguous_arrays(monkeypatch):
    """The port's record is made contiguous before the step log and the comparisons read it
    (fails if ``_lockstep`` stops calling ``contiguous_arrays``)."""
    from equiv.checking import compare
    from equiv.contract.records import Cell
    from equiv.running import runner

    seen = []
    original = compare.Comparison._compare

    def spy(self, step, impl, ref, tolerance):
        seen.extend(v.flags.c_contiguous for v in impl.grads.values())
        return original(self, step, impl, ref, tolerance)

    real = runner.contiguous_arrays
    transposed = []

    def transposing(record):
        # the port's grads as Fortran-ordered views, as a channels-last port reports them
        views = {k: np.asfortranarray(v) if np.ndim(v) == 2 else v for k, v in record.grads.items()}
        transposed.extend(not v.flags.c_contiguous for v in views.values() if np.ndim(v) == 2)
        return real(StepRecord(**{**record.__dict__, "grads": views}))

    monkeypatch.setattr(compare.Comparison, "_compare", spy)
    monkeypatch.setattr(runner, "contiguous_arrays", transposing)
    result = runner.run_cell(
        Cell("two_layer_mlp", "numpy", "float64"), runner.RunOptions.verdict_only(steps=3)
    )
    assert result.status == "pass", result.reason
    assert any(transposed) and seen and all(seen)


def _digest_as_stored(value) -> int:
    """The step log's digest as runs kept by earlier versions computed it (numpy's copy; a
    scalar as shape (1,)): digests of a run and of its baseline must stay comparable."""
    import xxhash

    a = np.ascontiguousarray(value)
    h = xxhash.xxh3_64(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.intdigest()


@pytest.mark.parametrize(
    "value",
    [
        np.random.default_rng(2)
        .standard_normal((3, 3, 4, 5))
        .astype(np.float32)
        .transpose(3, 2, 0, 1),
        np.arange(12.0).reshape(3, 4).T,
        np.arange(5.0),
        1.5,
        np.float32(0.25),
        np.zeros((0, 4)),
    ],
)
def test_a_digest_is_what_it_was(value):
    assert digest(value) == _digest_as_stored(value)


def test_a_record_of_a_ports_own_type_is_read_as_it_is():
    """The comparisons read a record by its attributes; one that is not a StepRecord is left
    alone, not an error."""
    from types import SimpleNamespace

    record = SimpleNamespace(loss=1.0, grads={"w": np.ones((2, 3)).T}, params={})
    assert contiguous_arrays(record) is record
