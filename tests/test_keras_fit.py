"""``keras.fit``: Keras's own training loop compared batch by batch, and what it cannot show.

The planted bugs are the two ``fit`` defaults that break a port from a torch loop
(``Model.fit``'s signature in keras/src/trainers/trainer.py): ``shuffle=True`` and the default
``batch_size`` of 32.
"""

import gc
import threading

import pytest

from equiv.backends.implementations import ImplSource, Patch
from equiv.backends.registry import get_backend
from equiv.checking.compare import declared_not_observed
from equiv.contract.case import get_case
from equiv.contract.records import Cell
from equiv.quality.mutants import CATALOGUE
from equiv.running.runner import RunOptions, run_cell

BACKEND = "keras.fit"
OPTIONS = RunOptions.verdict_only(steps=10)
MODULE = "cases.minibatch.keras_fit_impl"


@pytest.fixture(autouse=True)
def needs_keras_on_tensorflow():
    if reason := get_backend(BACKEND).availability():
        pytest.skip(reason)


def run(case, dtype="float64", *patches):
    impl = ImplSource(MODULE, tuple(Patch(old, new) for old, new in patches)) if patches else None
    return run_cell(Cell(case, BACKEND, dtype), OPTIONS, impl=impl)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fit_passes_and_its_gradients_are_not_observed(dtype):
    result = run("minibatch_partial", dtype)  # 10 steps: through the partial batch at step 7
    assert result.status == "pass", result.reason
    assert result.compared_steps == 10
    assert set(result.max_ratio) == {"loss", "params"}  # never "grads": nothing compared
    assert "grads" in result.not_observed and "model.fit" in result.not_observed["grads"]
    assert result.to_json()["not_observed"] == result.not_observed


def planted(mutant_id):
    """The selftest catalogue's plant: the same change as ``equiv selftest`` makes."""
    (mutant,) = [m for m in CATALOGUE if m.id == mutant_id]
    return tuple((p.old, p.new) for p in mutant.patches)


def test_fit_with_shuffle_fails_at_the_first_batch():
    result = run("minibatch", "float32", *planted("keras-fit-shuffle"))
    assert result.status == "fail", result.reason
    div = result.first_divergence
    assert (div.step, div.quantity) == (0, "loss")


def test_fit_with_the_default_batch_size_fails_at_the_first_batch():
    result = run("minibatch", "float32", *planted("keras-fit-default-batch-size"))
    assert result.status == "fail", result.reason
    div = result.first_divergence
    assert (div.step, div.quantity) == (0, "loss")


def test_a_dropped_fit_trainer_leaves_no_thread_inside_fit():
    spec = get_case("minibatch")
    backend = get_backend(BACKEND)
    from equiv.backends.process import ProcessConfig

    ProcessConfig.current().prepare(backend, 1)
    module = __import__(MODULE, fromlist=["build"])
    trainer = backend.build_trainer(spec, spec.make_state(0, "float32"), module)
    for _ in range(3):
        trainer.run_step()
    assert any(t.name == "equiv-stepped-fit" for t in threading.enumerate())
    del trainer
    gc.collect()
    assert not any(t.name == "equiv-stepped-fit" for t in threading.enumerate())


class Declares:
    def __init__(self, not_observed):
        self.not_observed = not_observed


def test_not_observed_must_name_known_quantities_and_leave_something():
    assert declared_not_observed(object()) == {}
    assert declared_not_observed(Declares({"grads": "why"})) == {"grads": "why"}
    with pytest.raises(ValueError, match="unknown"):
        declared_not_observed(Declares({"gradients": "why"}))
    with pytest.raises(ValueError, match="nothing to compare"):
        declared_not_observed(Declares(dict.fromkeys(("loss", "grads", "params"), "why")))
