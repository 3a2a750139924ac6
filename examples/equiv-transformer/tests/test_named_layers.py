"""A forward bug in a port built with equiv's one-call builders names its first wrong layer:
against the torch port as the reference, both ports record the block's five layers
(``transformer_block``'s ``port_activations``)."""

import pytest
from equiv.backends.implementations import ImplSource, Patch
from equiv.records import Cell
from equiv.running.runner import RunOptions, run_cell

pytest.importorskip("torch")
pytest.importorskip("keras")

KERAS = "equiv_transformer.transformer_block.keras_impl"


def keras_cell(patches=()):
    options = RunOptions.verdict_only(steps=2, reference="torch.eager")
    cell = Cell("transformer_block", "keras.tensorflow", "float32")
    return run_cell(cell, options, impl=ImplSource(KERAS, tuple(patches)))


def test_the_unplanted_port_is_compared_layer_by_layer():
    result = keras_cell()
    assert result.status == "explained", result.reason
    assert "activations" in result.max_ratio  # compared; the step-0 forward agrees:
    assert result.first_divergence.quantity == "params"  # AdamW's epsilon hat, declared


def test_a_wrong_layer_norm_epsilon_names_the_first_layer_norm():
    """Planted: the Keras port left at LayerNormalization's own epsilon 1e-3 (torch's 1e-5)."""
    plant = Patch('ln = explicit(cfg, epsilon=cfg["ln_eps"])', "ln = {}")
    result = keras_cell([plant])
    assert result.status == "fail"
    assert (result.first_divergence.quantity, result.first_divergence.name) == (
        "activations",
        "ln1",
    )
    assert result.layers["first_layer"] == "ln1" and result.layers["agreeing"] == []
    assert result.localization.name == "ln1"
