"""Minibatch cases (minibatch, minibatch_partial): the reference's batching, the training
curve the specs promise, and planted data-pipeline bugs that the harness must catch."""

import numpy as np
import pytest

from equiv.backends.implementations import ImplSource, Patch
from equiv.backends.registry import get_backend
from equiv.contract.case import get_case
from equiv.contract.records import Cell
from equiv.reference.batching import batch_slices, batches_per_epoch, step_data
from equiv.reference.trainer import ReferenceTrainer
from equiv.running.runner import RunOptions, run_cell

#: two epochs of minibatch_partial: the partial batch (step 7) and the wrap to batch 0 (step 8)
OPTIONS = RunOptions.verdict_only(steps=10)
TORCH_IMPL = "cases.minibatch.torch_impl"  # minibatch_partial re-exports it

LOADER = 'DataLoader(TensorDataset(x, y), batch_size=cfg["batch_size"])'
DROP_LAST = (
    LOADER,
    'DataLoader(TensorDataset(x, y), batch_size=cfg["batch_size"], drop_last=True)',
)
LOSS = "loss = F.mse_loss(self.model(x_batch), y_batch)"
NOMINAL_MEAN = (
    LOSS,
    'loss = F.mse_loss(self.model(x_batch), y_batch, reduction="sum") / (8 * y_batch.shape[1])',
)


def test_batch_slices_of_64_by_8_are_eight_full_batches():
    slices = batch_slices(64, 8)
    assert slices == [slice(i, i + 8) for i in range(0, 64, 8)]
    assert batches_per_epoch({"N": 64, "batch_size": 8}) == 8


def test_batch_slices_of_60_by_8_keep_a_partial_last_batch_of_4():
    slices = batch_slices(60, 8)
    assert slices == [*(slice(i, i + 8) for i in range(0, 56, 8)), slice(56, 60)]
    assert [len(range(60)[s]) for s in slices] == [8] * 7 + [4]
    assert batches_per_epoch({"N": 60, "batch_size": 8}) == 8
    with pytest.raises(ValueError):
        batch_slices(60, 0)


def test_step_data_takes_the_batches_in_order_and_wraps_each_epoch():
    data = {"x": np.arange(60.0).reshape(60, 1), "y": -np.arange(60.0)}
    cfg = {"N": 60, "batch_size": 8}
    assert step_data(data, cfg, 0)["x"][:, 0].tolist() == list(range(8))
    last = step_data(data, cfg, 7)
    assert last["x"][:, 0].tolist() == [56, 57, 58, 59]
    assert last["y"].tolist() == [-56, -57, -58, -59]
    assert np.array_equal(step_data(data, cfg, 8)["x"], step_data(data, cfg, 0)["x"])
    assert step_data(data, {"N": 60}, 3) is data  # no batch_size: all of the data


@pytest.mark.parametrize("case", ["minibatch", "minibatch_partial"])
def test_the_loss_falls_over_the_default_steps_and_no_unit_dies(case):
    spec = get_case(case)
    assert spec.default_steps == 160
    state = spec.make_state(0, "float64")
    trainer = ReferenceTrainer(spec, state)
    losses = []
    for _ in range(spec.default_steps):
        trainer.run_step()
        losses.append(float(trainer.record().loss))
    per_epoch = np.array(losses).reshape(20, 8).mean(axis=1)
    assert np.all(np.diff(per_epoch) < 0)
    assert per_epoch[-1] < 0.3 * per_epoch[0]
    h = state.data["x"] @ trainer.params["w1"] + trainer.params["b1"]
    assert (h > 0).any(axis=0).all()


def run_torch(case, dtype, *patches):
    if reason := get_backend("torch.eager").availability():
        pytest.skip(reason)
    impl = ImplSource(TORCH_IMPL, tuple(Patch(old, new) for old, new in patches))
    return run_cell(Cell(case, "torch.eager", dtype), OPTIONS, impl=impl if patches else None)


# float32 here; the same plants in float64 are selftest mutants (torch-loader-drop-last,
# torch-mean-over-nominal-batch), and the unpatched cells are the matrix's.
@pytest.mark.parametrize("dtype", ["float32"])
def test_a_loader_that_drops_the_partial_batch_diverges_at_step_7(dtype):
    """drop_last=True skips the batch of 4: step 7 trains on the next epoch's first batch."""
    result = run_torch("minibatch_partial", dtype, DROP_LAST)
    assert result.status == "fail", result.reason
    div = result.first_divergence
    assert (div.step, div.quantity) == (7, "loss")


@pytest.mark.parametrize("dtype", ["float32"])
def test_a_mean_over_the_nominal_batch_size_diverges_at_the_partial_batch(dtype):
    """Summing and dividing by 8 x D_out halves the batch of 4's loss: step 7 again."""
    result = run_torch("minibatch_partial", dtype, NOMINAL_MEAN)
    assert result.status == "fail", result.reason
    div = result.first_divergence
    assert (div.step, div.quantity) == (7, "loss")
    assert run_torch("minibatch", dtype, NOMINAL_MEAN).status == "pass"  # full batches only
