"""The torch port as the reference for the Keras and JAX cells' declared explanations.

A declared explanation's variant is expressed on a reference port only where the port reads
its forward keys (``VARIANT_KEYS``, docs/port-reference.md). The torch port reads ``ln_eps``,
``gelu`` and ``gelu_inv_sqrt2``. Here, for each variant the specs declare, one float64 step of
the torch port built from the variant's config agrees with the numpy reference under the same
variant to rounding (loss and gradients), and the plain torch port does not: the variant is
read, and this test could fail. Then one Keras cell of the defaults case, whose variant sets
``ln_eps`` and optimizer keys, is ``explained`` against ``--reference torch.eager``.
"""

import numpy as np
import pytest
from equiv.backends.implementations import load_implementation
from equiv.case import get_case
from equiv.contract.records import Cell
from equiv.reference.trainer import ReferenceTrainer
from equiv.registry import get_backend
from equiv.running.runner import RunOptions, run_cell

torch = pytest.importorskip("torch")

#: relative agreement of the torch port and the numpy reference in float64: rounding
AGREE = 1e-12

#: (case, variant): each forward key the specs' explanations set, with the declared value
VARIANTS = [
    ("transformer_block", {"gelu_inv_sqrt2": "float32"}),  # keras.tensorflow float64
    ("transformer_block_defaults", {"gelu_inv_sqrt2": "float32"}),
    ("transformer_block_defaults", {"ln_eps": 1e-3}),  # Keras's LayerNormalization
    ("transformer_block_defaults", {"ln_eps": 1e-6}),  # Flax's LayerNorm
    ("transformer_block_defaults", {"gelu": "tanh"}),  # jax.nn.gelu
]


def relative(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def disagreement(one, other) -> float:
    """The largest relative difference of two step records' loss and gradients."""
    return max(
        relative(one.loss, other.loss),
        *(relative(one.grads[k], other.grads[k]) for k in other.grads),
    )


def torch_step(spec, state):
    backend = get_backend("torch.eager")
    trainer = backend.build_trainer(spec, state, load_implementation(backend, spec))
    trainer.run_step()
    return trainer.record()


def reference_step(spec, state):
    trainer = ReferenceTrainer(spec, state)
    trainer.run_step()
    return trainer.record()


def test_torch_defaults_are_the_defaults_case_config():
    """The port passes nothing in the defaults case where the config holds these values."""
    from equiv_transformer.transformer_block.torch_impl import TORCH_DEFAULTS

    assert torch.nn.LayerNorm(1).eps == TORCH_DEFAULTS["ln_eps"]
    assert torch.nn.GELU().approximate == "none" and TORCH_DEFAULTS["gelu"] == "exact"
    config = get_case("transformer_block_defaults").config
    assert {k: config[k] for k in TORCH_DEFAULTS} == TORCH_DEFAULTS


@pytest.mark.parametrize(("case", "variant"), VARIANTS, ids=lambda v: str(v))
def test_the_torch_port_reads_the_variant(case, variant):
    spec = get_case(case)
    key = tuple(variant.items())
    assert set(variant) <= set(load_implementation(get_backend("torch.eager"), spec).VARIANT_KEYS)
    reference = reference_step(spec, spec.make_state(0, "float64", key))
    assert disagreement(torch_step(spec, spec.make_state(0, "float64", key)), reference) < AGREE
    assert disagreement(torch_step(spec, spec.make_state(0, "float64")), reference) > 1e3 * AGREE


def test_a_keras_defaults_cell_is_explained_against_the_torch_port():
    pytest.importorskip("keras")
    options = RunOptions.verdict_only(steps=5, reference="torch.eager")
    result = run_cell(Cell("transformer_block_defaults", "keras.tensorflow", "float32"), options)
    assert result.status == "explained", result.reason
