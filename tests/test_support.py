"""``equiv.support``: the scaffolding case code shares, held to what its docstrings promise.

The matrix holds the support trainers to the reference cell by cell; these are the promises it
does not test: records are snapshots, gradients line up with their names, loading refuses a
wrong layout with a clear error, the neutral modules import no framework, and every planted
bug of the catalogue is a change to a case file, never to this package.
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from equiv.backends.implementations import ImplSource
from equiv.backends.registry import get_backend
from equiv.contract.case import get_case
from equiv.quality.mutants import CATALOGUE
from equiv.support.draws import glorot_uniform, regression_data, standard_normal, torch_linear
from equiv.support.records import step_record, with_zero_grads

SUPPORT = Path(__file__).resolve().parent.parent / "equiv" / "support"


def needs(backend_id):
    reason = get_backend(backend_id).availability()
    return pytest.mark.skipif(reason is not None, reason=reason or "")


# -- records -------------------------------------------------------------------------------


def test_a_gradient_sequence_is_named_in_the_order_of_the_parameters():
    params = {"w1": np.zeros((2, 3)), "b1": np.zeros(3)}
    grads = [np.ones((2, 3)), 2 * np.ones(3)]
    record = step_record(np.array, np.float64(1.5), grads, params)
    assert list(record.grads) == ["w1", "b1"]
    assert record.grads["b1"].tolist() == [2.0, 2.0, 2.0]
    assert record.loss == 1.5 and np.ndim(record.loss) == 0


def test_a_gradient_missing_from_the_sequence_is_an_error_not_a_shorter_record():
    params = {"w1": np.zeros(2), "w2": np.zeros(2)}
    with pytest.raises(ValueError):
        step_record(np.array, 0.0, [np.ones(2)], params)


def test_a_record_converts_every_value_with_to_numpy_and_keeps_the_branch():
    seen = []

    def to_numpy(value):
        seen.append(value)
        return np.array(value, copy=True)

    params = {"w": np.arange(3.0)}
    record = step_record(to_numpy, 2.0, {"w": np.ones(3)}, params, branch="w2a")
    assert len(seen) == 3 and record.branch == "w2a"
    params["w"] += 1  # the trainer's parameter moves on: the record does not
    assert record.params["w"].tolist() == [0.0, 1.0, 2.0]


def test_unused_parameters_get_zero_gradients_in_the_parameters_order():
    params = {"w1": np.ones(2), "w2a": np.ones((2, 2)), "w2b": np.ones((2, 2))}
    grads = with_zero_grads({"w2b": np.full((2, 2), 3.0), "w1": np.ones(2)}, params)
    assert list(grads) == ["w1", "w2a", "w2b"]
    assert not grads["w2a"].any() and grads["w2a"].shape == (2, 2)
    assert (grads["w2b"] == 3).all()


# -- draws ---------------------------------------------------------------------------------


def test_regression_data_draws_x_then_y_standard_normal():
    cfg = {"N": 4, "D_in": 3, "D_out": 2}
    data = regression_data(np.random.default_rng(7), cfg)
    rng = np.random.default_rng(7)
    assert np.array_equal(data["x"], rng.standard_normal((4, 3)))
    assert np.array_equal(data["y"], rng.standard_normal((4, 2)))


def test_standard_normal_draws_in_the_order_of_its_names():
    drawn = standard_normal(np.random.default_rng(1), {"b": (2,), "a": (3,)})
    rng = np.random.default_rng(1)
    assert list(drawn) == ["b", "a"]
    assert np.array_equal(drawn["b"], rng.standard_normal(2))


def test_initialisations_stay_within_their_bounds_with_canonical_shapes():
    rng = np.random.default_rng(0)
    kernel, bias = torch_linear(rng, 400, 30)
    assert kernel.shape == (400, 30) and bias.shape == (30,)
    assert np.abs(kernel).max() <= 0.05 and np.abs(kernel).max() > 0.049
    glorot = glorot_uniform(rng, 400, 30)
    limit = np.sqrt(6 / 430)
    assert glorot.shape == (400, 30) and limit * 0.99 < np.abs(glorot).max() <= limit


def test_sigmoid_custom_op_draws_two_layer_mlp_state_with_w1_scaled():
    """The one draw written as another's: the same numbers, w1 divided by sqrt(D_in)."""
    plain = get_case("two_layer_mlp")
    sigmoid = get_case("sigmoid_custom_op")
    a, b = (
        plain.draw(np.random.default_rng(3), plain.config),
        sigmoid.draw(np.random.default_rng(3), sigmoid.config),
    )
    assert np.array_equal(a[0]["x"], b[0]["x"]) and np.array_equal(a[1]["w2"], b[1]["w2"])
    assert np.array_equal(a[1]["w1"] / np.sqrt(1000), b[1]["w1"])


# -- the neutral modules, and where plants go ----------------------------------------------


def test_the_neutral_support_modules_import_no_framework():
    code = (
        "import sys, equiv.support, equiv.support.records, equiv.support.draws\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'jax') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("mutant", CATALOGUE, ids=lambda m: m.id)
def test_every_planted_bug_is_one_change_to_a_case_file_not_to_the_support(mutant):
    """A planted bug is in the port under test: each patch's old text stands exactly once in
    the case file it patches, and nowhere in ``equiv.support``."""
    spec = get_case(mutant.case)
    module = mutant.module or get_backend(mutant.backend).implementation_module(spec)
    found = importlib.util.find_spec(module)  # a case file, in the repo or in a plugin
    if found is None:
        pytest.skip(f"{module} is not installed")
    assert module.startswith(("cases.", "equiv_jax.cases."))
    source = Path(found.origin).read_text()
    support = "".join(p.read_text() for p in SUPPORT.glob("*.py"))
    for patch in mutant.patches:
        assert source.count(patch.old) == 1, patch.old
        assert patch.old not in support, patch.old


# -- framework bases -----------------------------------------------------------------------


def build(case, backend_id, dtype="float64"):
    spec = get_case(case)
    backend = get_backend(backend_id)
    module = ImplSource(backend.implementation_module(spec)).load()
    state = spec.make_state(0, dtype)
    return backend.build_trainer(spec, state, module), state


def sum_squared_error(params, data):
    """two_layer_mlp's loss, in numpy."""
    y_pred = np.maximum(data["x"] @ params["w1"], 0) @ params["w2"]
    return np.sum((y_pred - data["y"]) ** 2)


@needs("tf.v1graph")
def test_graph_trainer_records_are_snapshots_with_the_loss_before_the_update():
    """Each ``Session.run`` fetches the loss of the parameters before its update (the update's
    control dependencies), and a record is not overwritten by the steps after it."""
    trainer, state = build("two_layer_mlp", "tf.v1graph")
    records, before = [], state.params
    for _ in range(3):
        trainer.run_step()
        record = trainer.record()
        assert record.loss == pytest.approx(sum_squared_error(before, state.data), rel=1e-12)
        records.append((record, {k: v.copy() for k, v in record.params.items()}))
        before = record.params
    for record, kept in records:
        for name, value in kept.items():
            assert np.array_equal(record.params[name], value), name
    first, last = records[0][0], records[-1][0]
    assert not np.array_equal(first.params["w1"], last.params["w1"])  # the steps did update


@needs("tf.v1graph")
def test_graph_trainer_groups_the_update_after_the_loss_and_gradients():
    """The update op waits for the loss and every gradient (control dependencies), so that a
    ``Session.run`` never fetches a loss or gradient computed from updated weights."""
    trainer, _ = build("two_layer_mlp", "tf.v1graph")
    loss, grads, update = trainer.fetches
    waits_for = {op.name for op in update.control_inputs}
    assert {loss.op.name, *(g.op.name for g in grads)} <= waits_for


@needs("keras.tensorflow")
def test_load_dense_refuses_a_transposed_kernel_naming_the_layer_and_both_shapes():
    import keras

    from equiv.support.keras import load_dense

    layer = keras.layers.Dense(3, dtype="float64", name="hidden")
    layer.build((None, 5))
    with pytest.raises(ValueError, match=r"'hidden'.*\(5, 3\), \(3,\).*\(3, 5\), \(3,\)"):
        load_dense(layer, np.zeros((3, 5)), np.zeros(3))
    with pytest.raises(ValueError, match="holds weights of shapes"):
        load_dense(layer, np.zeros((5, 3)))  # the bias left out
    load_dense(layer, np.arange(15.0).reshape(5, 3), np.ones(3))
    assert np.array_equal(np.asarray(layer.kernel), np.arange(15.0).reshape(5, 3))


@needs("keras.tensorflow")
def test_sum_squared_error_sums_every_element_in_the_given_dtype():
    from equiv.support.keras import SumSquaredError

    y, y_pred = np.ones((4, 3)), np.full((4, 3), 3.0)
    loss = SumSquaredError("float64")(y, y_pred)
    assert str(loss.dtype) == "<dtype: 'float64'>" or "float64" in str(loss.dtype)
    assert float(loss) == 48.0


@needs("torch.eager")
def test_linear_parameters_load_and_record_in_the_canonical_layout():
    import torch

    from equiv.support.torch import ModuleTrainer, linear, load_linear

    backend = get_backend("torch.eager")
    layer = torch.nn.Linear(4, 3).double()
    named = linear(layer, "w", "b")
    canonical = {"w": np.arange(12.0).reshape(4, 3), "b": np.array([1.0, 2.0, 3.0])}
    load_linear(backend, named, canonical)
    assert layer.weight.shape == (3, 4)  # torch's (out, in)
    assert np.array_equal(layer.weight.detach().numpy(), canonical["w"].T)
    loss = layer(torch.ones(2, 4, dtype=torch.float64)).sum()
    loss.backward()

    class Stepped(ModuleTrainer):
        pass

    state = get_case("keras_sequential").make_state(0, "float64")
    trainer = Stepped(state, backend, named)
    trainer.loss = loss.detach()
    record = trainer.record()
    assert np.array_equal(record.params["w"], canonical["w"])  # (in, out) again
    assert record.grads["w"].shape == (4, 3) and np.all(record.grads["w"] == 2.0)
    assert np.array_equal(record.grads["b"], [2.0, 2.0, 2.0])
