"""The calibration store: one calibration per (case, seed, steps, dtype, variant), bit for bit."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from equiv.contract.case import get_case
from equiv.tolerance import store as calibration_store
from equiv.tolerance.policy import _calibrate_cached, _calibrate_uncached, calibrate
from equiv.tolerance.store import CalibrationStore, cache_key

SPEC = get_case("dynamic_branching")  # has branches: the stored path must round-trip too


def assert_bitwise_equal(a, b) -> None:
    assert a.dtype == b.dtype and a.keys == b.keys and a.branches == b.branches
    assert a.losses64.tobytes() == b.losses64.tobytes()
    for field in ("tol", "scale", "amplification"):
        for key in a.keys:
            x, y = getattr(a, field)[key], getattr(b, field)[key]
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), (field, key)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_stored_calibration_is_bitwise_the_computed_one(tmp_path, dtype):
    _calibrate_cached.cache_clear()
    fresh = _calibrate_uncached(SPEC, 0, 30, dtype, ())
    first = calibrate(SPEC, 0, 30, dtype, store=CalibrationStore(tmp_path))
    (stored,) = tmp_path.glob("*.npz")
    _calibrate_cached.cache_clear()  # the next lookup must come from the file
    written = stored.stat().st_mtime_ns
    second = calibrate(SPEC, 0, 30, dtype, store=CalibrationStore(tmp_path))
    assert stored.stat().st_mtime_ns == written  # read, not recomputed
    assert_bitwise_equal(fresh, first)
    assert_bitwise_equal(fresh, second)
    assert any(b is not None for b in second.branches)


def test_the_key_changes_with_everything_that_determines_the_numbers(monkeypatch):
    base = cache_key(SPEC, 0, 30, "float64", ())
    others = {
        cache_key(SPEC, 1, 30, "float64", ()),
        cache_key(SPEC, 0, 31, "float64", ()),
        cache_key(SPEC, 0, 30, "float32", ()),
        cache_key(SPEC, 0, 30, "float64", (("lr", 1e-5),)),
        cache_key(get_case("two_layer_mlp"), 0, 30, "float64", ()),
    }
    assert base not in others and len(others) == 5
    assert cache_key(SPEC, 0, 30, "float64", ()) == base  # and only with that
    # a changed reference source is another key (the digest of each module's file)
    real = calibration_store._source_digest
    monkeypatch.setattr(
        calibration_store,
        "_source_digest",
        lambda m: "edited" if m.endswith(".reference") else real(m),
    )
    assert cache_key(SPEC, 0, 30, "float64", ()) != base


def test_workers_that_miss_together_compute_once(tmp_path):
    """Two workers asking for the same missing entry: one computes, the other waits for it."""
    computed: list[int] = []
    value = _calibrate_uncached(SPEC, 0, 5, "float64", ())

    def compute():
        computed.append(1)
        time.sleep(0.5)
        return value

    got = []
    threads = [
        threading.Thread(target=lambda: got.append(CalibrationStore(tmp_path).get("k", compute)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(computed) == 1 and len(got) == 2
    for g in got:
        assert_bitwise_equal(g, value)


def test_entries_hold_no_pickles(tmp_path):
    CalibrationStore(tmp_path).get("k", lambda: _calibrate_uncached(SPEC, 0, 3, "float32", ()))
    with np.load(tmp_path / "k.npz", allow_pickle=False) as found:
        assert all(found[k].dtype != object for k in found.files)


def test_a_case_that_reuses_another_cases_reference_is_keyed_on_that_file(monkeypatch):
    """keras_sequential_adam's reference re-exports keras_sequential's: an edit there must
    make its stored calibrations stale too, not only an edit of its own (re-exporting) file."""
    spec = get_case("keras_sequential_adam")
    base = cache_key(spec, 0, 30, "float64", ())
    real = calibration_store._source_digest
    monkeypatch.setattr(
        calibration_store,
        "_source_digest",
        lambda m: "edited" if m == "cases.keras_sequential.reference" else real(m),
    )
    assert cache_key(spec, 0, 30, "float64", ()) != base
