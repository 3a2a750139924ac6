"""Same seed, same verdicts; the reference's trajectory is bitwise identical run to run."""

import numpy as np

from equiv.backends.implementations import ImplSource, Patch
from equiv.contract.records import Cell
from equiv.running.matrix import run_cells, select_cells
from equiv.running.runner import RunOptions, run_cell

OPTIONS = RunOptions(seed=5, steps=12, bench_rounds=0, keep_arrays=True)


def test_two_runs_give_identical_verdicts_and_bitwise_identical_reference_trajectories():
    cells = select_cells(["two_layer_mlp", "dynamic_branching"], ["numpy", "torch.eager"])
    first = run_cells(cells, OPTIONS, isolate="none")
    second = run_cells(cells, OPTIONS, isolate="none")
    assert [(r.cell, r.status) for r in first] == [(r.cell, r.status) for r in second]
    for a, b in zip(first, second, strict=True):
        assert a.digest == b.digest is not None, a.cell.id  # every quantity of every step
        if a.cell.backend == "numpy":
            assert a.trajectory.keys() == b.trajectory.keys()
            for key in a.trajectory:
                assert np.asarray(a.trajectory[key]).tobytes() == b.trajectory[key].tobytes()


def test_reproducibility_is_recorded_per_cell():
    result = run_cell(Cell("two_layer_mlp", "torch.eager", "float64"), OPTIONS)
    assert result.reproducible is True


def test_a_nondeterministic_implementation_is_reported_as_not_reproducible():
    """The check can say no: a one-ulp change that differs from one build to the next (like a
    nondeterministic reduction order) keeps the cell passing but not bitwise reproducible."""
    noisy = ImplSource(
        "cases.two_layer_mlp.torch_impl",
        (
            Patch("class Trainer(", "BUILDS = [0]\n\n\nclass Trainer("),
            Patch(
                '        self.w1, self.w2 = self.w["w1"], self.w["w2"]\n',
                '        self.w1, self.w2 = self.w["w1"], self.w["w2"]\n'
                "        self.wobble = 1 + 2.0**-52 * BUILDS[0]\n"
                "        BUILDS[0] += 1\n",
            ),
            Patch(
                "        loss.backward()\n",
                "        loss.backward()\n"
                "        with torch.no_grad():\n"
                "            self.w1.grad.mul_(self.wobble)\n",
            ),
        ),
    )
    result = run_cell(Cell("two_layer_mlp", "torch.eager", "float64"), OPTIONS, impl=noisy)
    assert result.status == "pass", result.reason
    assert result.reproducible is False


def test_a_resynchronised_cell_is_reproducible_over_its_free_steps():
    """A fresh run steps freely, so only the steps before the first resynchronised one can be
    repeated bit for bit: resynchronised from step 1, a deterministic port is reproducible
    (its steps 1-4, held to a free rerun's, read as not reproducible before)."""
    options = RunOptions(seed=5, steps=6, bench_rounds=0, resync=True, resync_from=1)
    result = run_cell(Cell("two_layer_mlp", "torch.eager", "float32"), options)
    assert result.status == "pass" and result.resynchronised_from == 1, result.reason
    assert result.reproducible is True


def test_wrong_array_shapes_are_an_error_with_one_clear_reason():
    transposed = ImplSource(
        "cases.two_layer_mlp.torch_impl",
        (
            Patch(
                '        self.w1, self.w2 = self.w["w1"], self.w["w2"]\n',
                '        self.w1, self.w2 = self.w["w1"], self.w["w2"]\n'
                '        self.w = {"w1": self.w1.T, "w2": self.w2}  # what record reports\n',
            ),
        ),
    )
    result = run_cell(Cell("two_layer_mlp", "torch.eager", "float64"), OPTIONS, impl=transposed)
    assert result.status == "error"
    assert result.reason.startswith("wrong array shape: step 0: params/w1 has shape (100, 1000)")
    assert "\n" not in result.reason
