"""The calibration's trainers let go of each step's record once it is read: resnet18's keeps up
to seven trainers side by side, and their gradients and activations held until each one's next
step were a quarter of its peak memory (float32: 1.58 GB -> 1.19 GB; docs/performance.md)."""

from __future__ import annotations

import pytest

from equiv.contract.case import get_case
from equiv.reference.trainer import ReferenceTrainer
from equiv.tolerance.policy import _calibrate_uncached


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["two_layer_mlp", "keras_sequential_adam"])
def test_no_trainer_holds_a_read_record_while_another_steps(monkeypatch, case, dtype):
    """When a trainer starts a step, only the float64 reference's record (which every other
    trainer is compared with) may be held. Planted: a trainer that keeps its record."""
    trainers: list[ReferenceTrainer] = []
    held: list[int] = []
    create, step = ReferenceTrainer.__init__, ReferenceTrainer.run_step

    def init(self, *args, **kwargs):
        create(self, *args, **kwargs)
        trainers.append(self)

    def run_step(self, *args, **kwargs):
        # trainers[0] is the float64 reference, made first
        held.append(sum(t.last is not None for t in trainers[1:] if t is not self))
        step(self, *args, **kwargs)

    monkeypatch.setattr(ReferenceTrainer, "__init__", init)
    monkeypatch.setattr(ReferenceTrainer, "run_step", run_step)
    _calibrate_uncached(get_case(case), 0, 3, dtype, ())
    assert len(trainers) >= 3 and len(held) >= 9
    assert max(held) == 0, held
