"""A port as the reference (``--reference``, ``CaseSpec.reference_port``): what may serve,
that the numpy reference is never touched, that planted bugs still fail, and that a tied
parameter's observable is compared."""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
import pytest

from equiv.backends.reference_port import PortReference, refusal, variant_refusal
from equiv.checking.compare import Comparison
from equiv.cli.main import main
from equiv.contract.case import get_case
from equiv.contract.records import Cell, StepRecord
from equiv.running.runner import RunOptions, run_cell
from equiv.tolerance.calibration import Calibration

pytest.importorskip("torch")


def test_refusals_name_the_reason():
    assert refusal("torch.eager") is None
    assert "compiled mode" in refusal("torch.compile")
    assert "cannot compute in float64" in refusal("keras.torch")
    assert "keras.ops.mean" in refusal("keras.jax")
    assert refusal("keras.tensorflow") is None
    assert "keras-team/keras#23704" in refusal("keras.torch")
    assert "no backend 'torch.nope'" in refusal("torch.nope")


@pytest.mark.parametrize("port", ["torch.compile", "keras.torch", "nope"])
def test_the_command_line_refuses_in_one_line(port, capsys, tmp_path):
    assert (
        main(["run", "--reference", port, "--case", "two_layer_mlp", "--out", str(tmp_path)]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"equiv run: error: --reference {port}: ") and "\n" not in err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.fixture
def no_numpy_reference(monkeypatch):
    """two_layer_mlp's reference.py made unimportable (None in sys.modules: ImportError)."""
    from equiv.tolerance import policy

    policy._calibrate_cached.cache_clear()
    monkeypatch.delitem(sys.modules, "cases.two_layer_mlp.reference", raising=False)
    monkeypatch.setitem(sys.modules, "cases.two_layer_mlp.reference", None)
    yield
    policy._calibrate_cached.cache_clear()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_run_against_a_port_never_imports_the_numpy_reference(no_numpy_reference, dtype):
    options = RunOptions.verdict_only(steps=5, reference="torch.eager")
    result = run_cell(Cell("two_layer_mlp", "tf.eager", dtype), options)
    assert result.status == "pass", result.reason
    assert result.compared_steps == 5
    # the same cell against the numpy reference needs the module that was made unimportable
    plain = run_cell(Cell("two_layer_mlp", "tf.eager", dtype), RunOptions.verdict_only(steps=5))
    assert plain.status == "error" and "reference" in plain.reason


def test_a_planted_bug_fails_against_the_port_reference():
    """The mutant goes into the port under test; the reference port is built from the source."""
    from equiv.quality.mutants import CATALOGUE
    from equiv.quality.selftest import run_mutant

    mutant = next(m for m in CATALOGUE if m.id == "torch-update-sign")
    outcome = run_mutant(mutant, reference="torch.eager")
    assert outcome.detected, outcome.observed()
    assert outcome.result.first_divergence.step == 0


def test_the_reference_port_is_the_port_in_float64_stepped_by_equiv_optim():
    spec = get_case("two_layer_mlp").against("torch.eager")
    state = spec.make_state(0, "float64")
    reference = PortReference(spec, state)
    from equiv.reference.trainer import ReferenceTrainer

    numpy_reference = ReferenceTrainer(get_case("two_layer_mlp"), state)
    for _ in range(3):
        reference.run_step()
        numpy_reference.run_step()
    ours, theirs = reference.record(), numpy_reference.record()
    for name in spec.param_names:
        scale = np.max(np.abs(theirs.params[name]))
        assert np.max(np.abs(ours.params[name] - theirs.params[name])) < 1e-12 * scale


def test_gradient_rounding_reaches_the_update():
    """The tolerance policy's noisy shadows inject rounding between the port's gradients and
    equiv's update: it must move the parameters."""
    spec = get_case("two_layer_mlp").against("torch.eager")
    state = spec.make_state(0, "float64")
    plain, nudged = (
        PortReference(spec, state),
        PortReference(
            spec, state, perturb_grads=lambda g: {k: v * (1 + 1e-6) for k, v in g.items()}
        ),
    )
    plain.run_step()
    nudged.run_step()
    assert not np.array_equal(plain.record().params["w1"], nudged.record().params["w1"])


def test_an_optimizer_variant_is_expressible_and_a_forward_one_needs_the_port():
    spec = get_case("keras_sequential_adam").against("torch.eager")
    assert variant_refusal(spec, (("optimizer", "adam_epsilon_hat"),)) is None
    assert variant_refusal(spec, (("compute_dtype", "float32"),)) is None
    why = variant_refusal(spec, (("ln_eps", 1e-3),))
    assert "sets ln_eps" in why and "VARIANT_KEYS" in why
    assert variant_refusal(get_case("keras_sequential_adam"), (("ln_eps", 1e-3),)) is None


def test_a_case_naming_a_port_that_cannot_compute_float64_errors_in_one_line():
    spec = replace(get_case("two_layer_mlp"), reference_port="keras.torch")
    from equiv.backends import reference_port

    with pytest.raises(reference_port.NotAReference) as info:
        PortReference(spec, spec.make_state(0, "float64"))
    assert "\n" not in str(info.value) and "two_layer_mlp" in str(info.value)


def _comparison(derived):
    """A comparison of one parameter pair tied into a sum, with flat tolerances."""
    spec = replace(get_case("two_layer_mlp"), param_names=("a", "b"))
    keys = ["loss", "grads/a", "grads/b", "params/a", "params/b"]
    calibration = Calibration(
        dtype="float64",
        keys=tuple(keys),
        tol={k: np.full(1, 1e-9) for k in keys},
        scale={k: np.ones(1) for k in keys},
        amplification={k: np.ones(1) for k in keys},
        branches=(None,),
        losses64=np.zeros(1),
    )
    comparison = Comparison(spec, calibration, "float64")
    comparison.observe(derived)
    return comparison


def test_a_tied_parameter_is_compared_as_its_observable():
    derived = {"a+b": (("a", "b"), lambda a, b: a + b)}
    grads = {"a": np.ones(3), "b": np.ones(3)}
    ref = StepRecord(1.0, grads, {"a": np.full(3, 2.0), "b": np.full(3, 3.0)})
    good = StepRecord(1.0, grads, {"a+b": np.full(3, 5.0)})
    comparison = _comparison(derived)
    assert comparison.keys == ["loss", "grads/a", "grads/b", "params/a+b"]
    comparison.add(0, good, ref)
    assert comparison.first_divergence is None
    # planted: the framework's one bias moved by half the step torch's two move their sum
    wrong = StepRecord(1.0, grads, {"a+b": np.full(3, 5.0 + 3e-9)})
    comparison = _comparison(derived)
    comparison.add(0, wrong, ref)
    div = comparison.first_divergence
    assert div is not None and (div.quantity, div.name) == ("params", "a+b")
    # within the sum of its parts' tolerances (2e-9), it passes
    close = StepRecord(1.0, grads, {"a+b": np.full(3, 5.0 + 1.5e-9)})
    comparison = _comparison(derived)
    comparison.add(0, close, ref)
    assert comparison.first_divergence is None


def test_a_port_whose_shapes_disagree_with_its_layout_errors_naming_case_and_file():
    """Planted: keras_sequential's torch port with its first layer's sizes swapped."""
    from equiv.backends.implementations import ImplSource, Patch

    impl = ImplSource(
        "cases.keras_sequential.torch_impl",
        (
            Patch(
                'torch.nn.Linear(cfg["D_in"], cfg["H"]),', 'torch.nn.Linear(cfg["H"], cfg["D_in"]),'
            ),
        ),
    )
    options = RunOptions.verdict_only(steps=2)
    result = run_cell(Cell("keras_sequential", "torch.eager", "float64"), options, impl=impl)
    assert result.status == "error" and "\n" not in result.reason
    assert result.reason.startswith("LayoutError: case keras_sequential, <cases.keras_sequential")
    assert "0.weight" in result.reason


def test_the_case_kit_checks_a_port_referenced_case_without_its_numpy_checks():
    """A case with no reference.py: the kit's finite-difference check skips saying why, and
    every parameter's gradient is checked on the reference port's first step."""
    pytest.importorskip("equiv_transformer")
    from equiv.testing import CaseConformance

    class Kit(CaseConformance):
        case_name = "lstm_regressor"

    kit = Kit()
    with pytest.raises(pytest.skip.Exception, match="its reference is the port torch.eager"):
        kit.test_reference_matches_finite_differences()
    kit.test_every_parameter_gets_a_gradient()


def test_a_stored_port_calibration_is_keyed_by_the_code_the_port_runs():
    """keras_sequential_adam's torch port re-exports keras_sequential's build, which runs
    through equiv.support.torch_port: a change to either must give a new calibration."""
    from equiv.tolerance.store import case_modules

    modules = case_modules(get_case("keras_sequential_adam").against("torch.eager"))
    assert "cases.keras_sequential_adam.torch_impl" in modules
    assert "cases.keras_sequential.torch_impl" in modules
    assert "equiv.support.torch_port" in modules and "equiv.backends.torch" in modules
    assert not any(m.endswith(".reference") for m in modules)
