"""The numbers behind the report's plots: the series a run writes (pooled to SERIES_POINTS)."""

from __future__ import annotations

from equiv.compare import SERIES_POINTS, Comparison


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
