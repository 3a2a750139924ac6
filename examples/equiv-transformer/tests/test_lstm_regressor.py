"""lstm_regressor: a case with no numpy reference, its torch port the ground truth.

Discovered without a ``reference.py``; a torch cell passes and a Keras cell is ``explained``
against the torch port (Keras's LSTM holds one bias, b_ih + b_hh, and its SGD trains the sum
half as fast: the declared variant freezes torch's b_hh); without that declaration the Keras
cell fails at step 0 on the summed bias's observable; a planted gate swap in the Keras port's
layout fails at step 0 in the forward pass, the LSTM named as the first wrong layer. Every
cell runs in this process (torch.eager, keras.tensorflow) for a few steps.
"""

import importlib.util
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, distribution

import pytest

try:
    distribution("equiv-transformer")
except PackageNotFoundError:  # a checkout where the package was never installed
    pytest.skip(
        "equiv-transformer is not installed (pip install -e examples/equiv-transformer)",
        allow_module_level=True,
    )

from equiv.backends.implementations import ImplSource, Patch  # noqa: E402
from equiv.contract.case import case_catalog, case_origin, get_case  # noqa: E402
from equiv.contract.records import Cell  # noqa: E402
from equiv.running.runner import RunOptions, run_cell  # noqa: E402

CASE = "lstm_regressor"
STEPS = 3
KERAS = "keras.tensorflow"
SUM = "lstm.bias_ih+bias_hh"


def run(backend, dtype="float64", impl=None):
    return run_cell(Cell(CASE, backend, dtype), RunOptions.verdict_only(steps=STEPS), impl=impl)


def test_discovered_with_no_numpy_reference():
    spec = get_case(CASE)
    assert spec.reference_port == "torch.eager"
    assert "equiv-transformer" in case_origin(CASE)
    assert importlib.util.find_spec(spec.module_name("reference")) is None
    assert importlib.util.find_spec(spec.module_name("torch_impl")) is not None


def test_torch_passes_and_keras_is_explained_by_its_one_bias():
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    torch_result = run("torch.eager")
    assert torch_result.status == "pass", torch_result.reason
    keras_result = run(KERAS)
    assert keras_result.status == "explained", keras_result.reason
    assert keras_result.compared_steps == STEPS
    assert "frozen" in keras_result.reason and "lstm.py" in keras_result.reason


def test_without_the_declaration_keras_fails_on_the_summed_bias(monkeypatch):
    pytest.importorskip("keras")
    spec = get_case(CASE)
    kept = tuple(e for e in spec.explanations if "frozen" not in e.variant)
    monkeypatch.setitem(case_catalog().cases, CASE, replace(spec, explanations=kept))
    result = run(KERAS)
    assert result.status == "fail", result.reason
    div = result.first_divergence
    assert (div.step, div.quantity, div.name) == (0, "params", SUM)


#: a porting bug: the input kernel's gate blocks i and f swapped on loading (a port author who
#: took Keras's gate order for f, i, c, o); same shapes, so only the numbers show it
SWAPPED = """def gates_swapped(lstm):
    from dataclasses import replace

    def swap(a):
        return layouts.permute_gates(a, (1, 0, 2, 3))

    kernel = layouts.copy("kernel_ih", "lstm_cell/kernel", swap, swap)
    rules = [kernel if r.targets == ("lstm_cell/kernel",) else r for r in lstm.rules]
    return replace(lstm, rules=tuple(rules))


def layout(cfg):"""
GATE_SWAP = (
    Patch("def layout(cfg):", SWAPPED),
    Patch(
        '"lstm": layouts.keras_lstm(cfg["F"], cfg["H"]),',
        '"lstm": gates_swapped(layouts.keras_lstm(cfg["F"], cfg["H"])),',
    ),
)


def test_a_gate_swap_fails_at_step_0_in_the_lstm_layer():
    pytest.importorskip("keras")
    spec = get_case(CASE)
    impl = ImplSource(spec.module_name("keras_impl"), GATE_SWAP)
    result = run(KERAS, impl=impl)
    assert result.status == "fail", result.reason
    div = result.first_divergence
    assert (div.step, div.quantity, div.name) == (0, "activations", "lstm")
    assert result.layers["first_layer"] == "lstm" and result.layers["agreeing"] == []
    loc = result.localization
    assert loc is not None and (loc.step, loc.quantity, loc.name) == (0, "activations", "lstm")
