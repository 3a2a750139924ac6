"""What the lockstep holds while it runs: a check's reference trainer goes once the check is
decided, not with the cell, and at a divergence only what a failing cell's file will hold is
kept (resnet18's explained float32 cells: two float64 references and two records of 170 MB
each beside the port; docs/performance.md)."""

from __future__ import annotations

import numpy as np
import pytest

from equiv.checking.compare import Check
from equiv.contract.divergence import Divergence
from equiv.contract.records import Cell, StepRecord
from equiv.running.runner import RunOptions, _values_at, run_cell


def test_a_check_not_followed_lets_go_of_its_reference_when_resynchronising_begins(monkeypatch):
    """An explained float32 cell resynchronised from step 2 follows the explanation's variant:
    the plain reference's check ends there, and its trainer goes at once. Planted: kept to the
    end of the cell."""
    from equiv.backends.registry import get_backend

    if reason := get_backend("keras.tensorflow").availability():
        pytest.skip(reason)
    from equiv.checking.compare import Comparison

    compared, released = [], []
    add, add_resynced, release = Comparison.add, Comparison.add_resynced, Check.release

    def spy(self):
        if self.reference is not None:  # (label, steps compared so far by both checks)
            released.append((self.label, len(compared)))
        release(self)

    monkeypatch.setattr(Comparison, "add", lambda *a: compared.append(1) or add(*a))
    monkeypatch.setattr(
        Comparison, "add_resynced", lambda *a: compared.append(1) or add_resynced(*a)
    )
    monkeypatch.setattr(Check, "release", spy)
    options = RunOptions.verdict_only(steps=5, resync=True, resync_from=2)
    result = run_cell(Cell("keras_sequential_adam", "keras.tensorflow", "float32"), options)
    assert result.status == "explained" and result.resynchronised_from == 2, result.reason
    # two steps each, then the variant's three alone
    assert released == [("reference", 4), ("variant", 7)]


def test_a_large_model_keeps_the_diverging_quantity_alone_at_a_divergence():
    record = StepRecord(
        loss=1.0,
        grads={"w": np.zeros(3), "v": np.zeros(2)},
        params={"w": np.ones(3), "v": np.ones(2)},
    )
    div = Divergence(0, "grads", "w", "backward", 1.0, 0.1, None)
    got, want = _values_at(div, record, record, diverging_only=True)
    assert list(got) == list(want) == ["grads/w"]
    got, _ = _values_at(div, record, record, diverging_only=False)
    assert set(got) == {"loss", "grads/w", "grads/v", "params/w", "params/v"}


@pytest.mark.parametrize(("limit", "large"), [(None, False), (0, True)])
def test_a_failing_cells_file_holds_the_diverging_quantity_alone_past_the_size_limit(
    monkeypatch, limit, large
):
    """The lockstep keeps at a divergence what the failing cell's file then holds: every
    quantity of a small model, the diverging one alone of a model past
    ``TRAJECTORY_MAX_PARAMETERS`` (here lowered to 0). Planted: the second update doubled."""
    from equiv.backends.implementations import ImplSource, Patch
    from equiv.backends.registry import get_backend
    from equiv.running import runner

    if reason := get_backend("torch.eager").availability():
        pytest.skip(reason)
    if limit is not None:
        monkeypatch.setattr(runner, "TRAJECTORY_MAX_PARAMETERS", limit)
    update = "            self.w2 -= self.lr * self.w2.grad\n"
    impl = ImplSource(
        "cases.two_layer_mlp.torch_impl", (Patch(update, update.replace("self.lr", "2 * self.lr")),)
    )
    options = RunOptions(steps=3, bench_rounds=0, check_reproducible=False, digests=False)
    result = run_cell(Cell("two_layer_mlp", "torch.eager", "float64"), options, impl=impl)
    assert result.status == "fail", result.reason
    div = result.first_divergence
    key = div.quantity if div.name is None else f"{div.quantity}/{div.name}"
    kept = {k.split("/", 2)[2] for k in result.trajectory if k.startswith("divergence/reference/")}
    assert key in kept
    assert (kept == {key}) is large, kept
