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


def test_a_trainer_lets_go_of_its_last_record_when_it_steps_again(monkeypatch):
    """The last step's record (resnet18's: 170 MB in float64) is not held through the next
    step's forward and backward pass, the reference's or a TF port's. Planted: kept."""
    spec = get_case("two_layer_mlp")
    reference = ReferenceTrainer(spec, spec.make_state(0, "float64"))
    held = []
    forward_backward = reference.module.forward_backward

    def spy(*args, **kwargs):
        held.append(reference.last is not None)
        return forward_backward(*args, **kwargs)

    monkeypatch.setattr(reference.module, "forward_backward", spy)
    for _ in range(3):
        reference.run_step()
        assert reference.record() is not None
    assert held == [False, False, False]


def test_a_tf_port_lets_go_of_its_last_gradients_when_it_steps_again():
    from equiv.backends.implementations import load_implementation
    from equiv.backends.registry import get_backend

    backend = get_backend("tf.eager")
    if reason := backend.availability():
        pytest.skip(reason)
    backend.configure(1)
    spec = get_case("two_layer_mlp")
    port = backend.build_trainer(
        spec, spec.make_state(0, "float64"), load_implementation(backend, spec)
    )
    held = []
    step = port.step

    def spy(*args):
        held.append(port.last is not None)
        return step(*args)

    port.step = spy
    for _ in range(3):
        port.run_step()
        assert port.record() is not None
    assert held == [False, False, False]
