"""The harness's own cost: ``phases_s`` splits a cell's time between the port's work and the
harness's, and the report's Speed section shows the harness's share (issue: where a run's time
goes)."""

from __future__ import annotations

import copy
import time

import pytest

from equiv.backends.implementations import ImplSource, Patch
from equiv.backends.registry import get_backend
from equiv.contract.records import COMPARE, HARNESS_PHASES, REFERENCE, Cell, harness_split
from equiv.reference.trainer import ReferenceTrainer
from equiv.report.render import build_context
from equiv.running.runner import RunOptions, run_cell

CELL = Cell("two_layer_mlp", "torch.eager", "float64")
OPTIONS = RunOptions.verdict_only(steps=6)
PAUSE_S = 0.05

needs_torch = pytest.mark.skipif(
    get_backend("torch.eager").availability() is not None, reason="needs torch"
)


def _slow_port() -> ImplSource:
    step = "        loss.backward()\n"
    return ImplSource(
        "cases.two_layer_mlp.torch_impl",
        (Patch(step, f"{step}        __import__('time').sleep({PAUSE_S})\n"),),
    )


@needs_torch
def test_a_slow_port_is_the_ports_time_and_a_slow_reference_the_harnesss(monkeypatch):
    """Planted: a pause in the port's step lands in ``lockstep``, the same pause in the
    reference's step in ``reference``, in a comparison in ``compare``; every second of the
    cell is in exactly one phase."""
    from equiv.checking.compare import Comparison

    plain = run_cell(CELL, OPTIONS)
    slow_port = run_cell(CELL, OPTIONS, impl=_slow_port())
    reference_step = ReferenceTrainer.run_step
    compare_step = Comparison.add

    def slow_reference_step(self, *args, **kwargs):
        time.sleep(PAUSE_S)
        reference_step(self, *args, **kwargs)

    def slow_comparison(self, *args, **kwargs):
        time.sleep(PAUSE_S)
        return compare_step(self, *args, **kwargs)

    monkeypatch.setattr(ReferenceTrainer, "run_step", slow_reference_step)
    slow_reference = run_cell(CELL, OPTIONS)
    monkeypatch.setattr(ReferenceTrainer, "run_step", reference_step)
    monkeypatch.setattr(Comparison, "add", slow_comparison)
    slow_compare = run_cell(CELL, OPTIONS)
    steps = OPTIONS.steps
    for result in (plain, slow_port, slow_reference, slow_compare):
        assert result.status == "pass", result.reason
        assert COMPARE in result.phases_s and "lockstep" in result.phases_s
        port, harness = harness_split(result.phases_s)
        assert port + harness == pytest.approx(sum(result.phases_s.values()))
        assert sum(result.phases_s.values()) <= result.duration_s + 1e-6
    grown = steps * PAUSE_S * 0.9
    assert slow_port.phases_s["lockstep"] - plain.phases_s["lockstep"] > grown
    assert slow_port.phases_s[COMPARE] - plain.phases_s[COMPARE] < grown / 2
    assert slow_reference.phases_s[REFERENCE] - plain.phases_s[REFERENCE] > grown
    assert slow_reference.phases_s[COMPARE] - plain.phases_s[COMPARE] < grown / 2
    assert slow_reference.phases_s["lockstep"] - plain.phases_s["lockstep"] < grown / 2
    assert slow_compare.phases_s[COMPARE] - plain.phases_s[COMPARE] > grown
    assert slow_compare.phases_s[REFERENCE] - plain.phases_s[REFERENCE] < grown / 2


def _document(phases: list[dict[str, float]]) -> dict:
    from equiv.contract.records import CellResult
    from equiv.results.document import build_document

    results = []
    for i, p in enumerate(phases):
        backend = ("numpy", "torch.eager")[i % 2]
        r = CellResult(Cell("two_layer_mlp", backend, ("float64", "float32")[i // 2]), "pass")
        r.phases_s = dict(p)
        results.append(r)
    return build_document(results, {"seed": 0, "threads": 1}, {})


def test_the_speed_section_shows_the_harnesss_share_per_backend_and_for_the_run():
    phases = [
        {"imports": 1.0, "calibration": 2.0, "lockstep": 3.0, REFERENCE: 1.5, COMPARE: 2.5},
        {"lockstep": 6.0, COMPARE: 1.0, "benchmark": 2.0, "extras": 1.0},
        {"lockstep": 1.0, COMPARE: 1.0},
        {"startup": 2.0, "lockstep": 2.0, "diagnosis": 3.0, REFERENCE: 1.0},
    ]
    rows = {r["backend"]: r for r in build_context(_document(phases))["harness_costs"]}
    assert set(HARNESS_PHASES) == {"calibration", REFERENCE, COMPARE, "extras", "diagnosis"}
    assert (rows["numpy"]["port_s"], rows["numpy"]["harness_s"]) == (5.0, 7.0)
    assert (rows["torch.eager"]["port_s"], rows["torch.eager"]["harness_s"]) == (12.0, 6.0)
    assert (rows["numpy"]["reference_s"], rows["torch.eager"]["reference_s"]) == (1.5, 1.0)
    assert rows["run"]["cells"] == 4 and rows["run"]["share"] == pytest.approx(13 / 30)
    assert rows["run"]["reference_s"] == 2.5


def test_a_document_from_before_the_reference_was_timed_apart_shows_no_reference_column():
    """Its ``compare`` holds the reference's steps: a 0 there would read as none."""
    rows = build_context(_document([{"lockstep": 3.0, COMPARE: 1.0}]))["harness_costs"]
    assert rows and all(r["reference_s"] is None for r in rows)


def test_a_document_from_before_the_split_shows_no_share():
    """Its ``lockstep`` holds the harness's work too: a share from it would be wrong."""
    document = _document([{"lockstep": 3.0, "calibration": 1.0}])
    assert build_context(copy.deepcopy(document))["harness_costs"] == []


@needs_torch
def test_the_reproducibility_fingerprints_are_harness_work_and_only_where_read(monkeypatch):
    """The first steps' fingerprints (the reproducibility check) are timed as ``compare``, not
    as the port's ``lockstep``, and not taken at all where the check is off (the matrix,
    sweeps). Planted: a pause in taking one."""
    import dataclasses

    from equiv.running import runner

    calls = []

    def slow_fingerprint(record):
        calls.append(1)
        time.sleep(PAUSE_S)
        return ()

    monkeypatch.setattr(runner, "fingerprint", slow_fingerprint)
    run_cell(CELL, OPTIONS)
    assert calls == []  # check_reproducible off
    checked = run_cell(CELL, dataclasses.replace(OPTIONS, check_reproducible=True))
    paused = runner.REPRODUCIBILITY_STEPS * PAUSE_S
    assert len(calls) == runner.REPRODUCIBILITY_STEPS
    assert checked.phases_s[COMPARE] >= paused
    assert checked.phases_s["lockstep"] < paused, checked.phases_s
