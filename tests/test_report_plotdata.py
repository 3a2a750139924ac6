"""The numbers behind the report's plots: the series a run writes (pooled to SERIES_POINTS) and
the compact data the page carries for the browser to draw."""

from __future__ import annotations

import math

from equiv.checking.compare import SERIES_POINTS, Comparison
from equiv.report import plotdata


def comparison(errors: list[float], tolerances: list[float]) -> Comparison:
    """A Comparison holding one quantity's per-step numbers (series() reads only these)."""
    cmp = Comparison.__new__(Comparison)
    cmp.keys = ["loss"]
    cmp._error, cmp._tol = {"loss": errors}, {"loss": tolerances}
    return cmp


def test_series_is_pooled_to_series_points_and_keeps_every_excursion():
    steps = 500
    errors = [1e-9] * steps
    errors[123] = 5e-5  # one step beyond tolerance, inside a bin of 5
    errors[124] = 2e-5
    series = comparison(errors, [1e-5] * steps).series()
    assert len(series["step"]) == SERIES_POINTS == 100
    assert series["step"][:3] == [4, 9, 14] and series["step"][-1] == steps - 1
    loss = series["loss"]
    assert loss["error"].count(5e-5) == 1 and 2e-5 not in loss["error"]
    assert loss["error"][series["step"].index(124)] == 5e-5
    assert loss["tolerance"] == [1e-5] * SERIES_POINTS


def test_short_runs_are_not_pooled():
    series = comparison([0.123456, 0.0], [1.0, 1.0]).series()
    assert series == {"step": [0, 1], "loss": {"error": [0.1235, 0.0], "tolerance": [1.0, 1.0]}}


def test_error_data_groups_rounds_and_marks_steps_beyond_tolerance():
    series = {
        "step": [0, 1, 2],
        "loss": {"error": [0.0, 1.23456e-7, "nan"], "tolerance": [1e-6, 1e-6, 1e-6]},
        "grads/w1": {"error": [1.0000004e-5, 2e-5, 1e-7], "tolerance": [1e-5, 1e-5, 0.0]},
        "params/w1": {"error": [1e-9], "tolerance": []},
    }
    data = plotdata.error_data(series, {"step": 0})
    assert data is not None and data["div"] == 0 and data["step"] == [0, 1, 2]
    loss, grads, params = data["groups"]
    assert (loss["title"], grads["title"], params["title"]) == ("loss", "gradients", "parameters")
    assert loss["q"] == [["loss", [0.0, 1.23e-7, None], [1e-6, 1e-6, 1e-6]]]
    # beyond tolerance judged before rounding: 1.0000004e-5 > 1e-5 although both print 1e-5
    assert grads["q"][0] == ["w1", [1e-5, 2e-5, 1e-7], [1e-5, 1e-5, 0.0], [0, 1, 2]]
    assert params["q"] == [["w1", [1e-9, None, None], [None, None, None]]]
    assert plotdata.error_data({}, None) is None
    assert plotdata.error_data({"step": [0], "loss": "odd"}, None) is None


def test_branch_data_is_runs():
    branches = {
        "reference": ["a", "a", "b", "b", "a"],
        "implementation": ["a", "b", "b", None],
        "ambiguous_steps": [1, "x"],
        "stopped_at": 3,
    }
    data = plotdata.branch_data(branches)
    assert data == {
        "n": 5,
        "names": ["?", "a", "b"],
        "ref": [[0, 2, 1], [2, 2, 2], [4, 1, 1]],
        "impl": [[0, 1, 1], [1, 2, 2], [3, 1, 0]],
        "ambiguous": [1],
        "differ": [1, 3],
        "stopped": 3,
    }
    assert plotdata.branch_data({"reference": []}) is None


def test_pack_round_trips_and_is_deterministic():
    data = {"cell-a": {"errors": {"step": [0, 1], "x": [math.pi, None], "name": "</script>"}}}
    packed = plotdata.pack(data)
    assert packed == plotdata.pack(data)
    assert set(packed) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")
    assert plotdata.unpack(packed) == data
