"""Diagnosis finds what is declared, and finds planted porting mistakes by their catalogue entry.

``transformer_block_defaults`` declares nine differences (Keras's LayerNorm epsilon, AdamW
settings and epsilon-hat form, TensorFlow's float32 constants, JAX's GELU, LayerNorm epsilon and
weight decay, Keras on jax's float32 compute, ...). Run with no declaration at all
(``declarations=False``), each Keras and JAX cell fails, and its diagnosis must find exactly
the keys its declarations set today, case and backend declarations merged: no fewer, no more,
proven as a declared explanation is, each member needed. One cell per kind of declaration set
runs in the default suite (keras.tensorflow in float64: seven keys, the largest set); the ten
run under ``-m slow``.
"""

import pytest
from equiv.backends.implementations import ImplSource, Patch
from equiv.case import get_case
from equiv.checking.verdict import declared_explanation
from equiv.quality.mistakes import PortingMistake, diagnose_mistake, run_diagnosed
from equiv.records import Cell
from equiv.registry import get_backend

CASE = "transformer_block_defaults"
TORCH = "equiv_transformer.transformer_block.torch_impl"
FAST = {("keras.tensorflow", "float64"), ("jax.jit", "float32")}


def cells():
    for backend in ("keras.tensorflow", "keras.torch", "keras.jax", "jax.eager", "jax.jit"):
        for dtype in ("float32", "float64"):
            marks = () if (backend, dtype) in FAST else (pytest.mark.slow,)
            yield pytest.param(backend, dtype, marks=marks, id=f"{backend}-{dtype}")


@pytest.mark.parametrize(("backend_id", "dtype"), cells())
def test_diagnosis_finds_exactly_what_is_declared(backend_id, dtype):
    declared = declared_explanation(get_case(CASE), get_backend(backend_id), dtype)
    result = run_diagnosed(Cell(CASE, backend_id, dtype), declarations=False)
    if isinstance(result, str):
        pytest.skip(result)
    assert result.status == "fail", result.reason  # found is not a pass
    found = result.diagnosis
    assert found["outcome"] == "found", found["sentence"]
    assert found["variant"] == declared.variant
    assert all(member["without_it"] is not None for member in found["members"])  # each needed
    assert found["declaration"].startswith("Explanation(")


def _mistake(id, backend, dtype, old, new, expected, case="transformer_block", module=TORCH):
    return PortingMistake(id, case, backend, dtype, (Patch(old, new),), expected, module=module)


MISTAKES = (
    _mistake(
        "torch-gelu-tanh",
        "torch.eager",
        "float64",
        'approximate = "tanh" if cfg["gelu"] == "tanh" else "none"',
        'approximate = "tanh"',
        ("gelu_tanh",),
    ),
    _mistake(
        "torch-adamw-keras-epsilon",
        "torch.eager",
        "float32",
        'eps=cfg["epsilon"],',
        "eps=1e-7,",
        ("keras.adam_epsilon",),
    ),
    # outside the catalogue: never a wrong cause
    _mistake(
        "torch-layer-norm-eps-1e-4",  # a near miss: no framework defaults to 1e-4
        "torch.eager",
        "float64",
        'ln = forward_setting(cfg, "ln_eps", eps=cfg["ln_eps"])',
        'ln = forward_setting(cfg, "ln_eps", eps=1e-4)',
        (),
    ),
    _mistake(
        "torch-amsgrad",  # far from every entry
        "torch.eager",
        "float64",
        'torch.optim.AdamW(params, lr=cfg["lr"], **opt)',
        'torch.optim.AdamW(params, lr=cfg["lr"], amsgrad=True, **opt)',
        (),
    ),
    # without a numpy reference: the torch.eager port is the reference (built from the
    # unmodified source), the mistake is planted into the port under test only
    _mistake(
        "torch-lstm-mse-summed",
        "torch.jit",
        "float64",
        'reduction=cfg["loss_reduction"]',
        'reduction="sum"',
        ("loss_reduction_sum",),
        case="lstm_regressor",
        module="equiv_transformer.lstm_regressor.torch_impl",
    ),
    # another near miss, under the declaration of Keras's single LSTM bias: Keras's own
    # reduction="sum" sums per-sample means (N times the mean, not N * out times): not the
    # summed-loss entry
    _mistake(
        "keras-lstm-keras-sum-reduction",
        "keras.tensorflow",
        "float32",
        "loss=keras.losses.MeanSquaredError(dtype=dtype)",
        'loss=keras.losses.MeanSquaredError(reduction="sum", dtype=dtype)',
        (),
        case="lstm_regressor",
        module="equiv_transformer.lstm_regressor.keras_impl",
    ),
)


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.id)
def test_a_planted_porting_mistake_is_diagnosed_by_its_entry(mistake):
    result = diagnose_mistake(mistake)
    if isinstance(result, str):
        pytest.skip(result)
    assert mistake.judged(result) is None, mistake.judged(result)


def test_a_bug_under_a_declaration_is_localized_and_diagnosed_as_itself():
    """Planted under transformer_block_defaults's Keras declarations (whose difference shows
    at step 0's loss): a learning rate doubled in the Keras port. The cell's first divergence
    and localization name the bug (step 0, the update), not the declared difference (step 0,
    the forward pass), and the search on top of the declaration finds nothing to blame."""
    impl = ImplSource(
        "equiv_transformer.transformer_block.keras_impl",
        (Patch('AdamW(learning_rate=cfg["lr"]', 'AdamW(learning_rate=2 * cfg["lr"]'),),
    )
    result = run_diagnosed(Cell(CASE, "keras.tensorflow", "float32"), impl, steps=3)
    if isinstance(result, str):
        pytest.skip(result)
    assert result.status == "fail"
    assert result.explanation.reference_divergence.phase == "forward"  # the declared one
    assert (result.first_divergence.step, result.first_divergence.phase) == (0, "update")
    assert (result.localization.step, result.localization.phase) == (0, "update")
    assert result.diagnosis["outcome"] != "found"
    assert (
        result.diagnosis["base"]
        == declared_explanation(get_case(CASE), get_backend("keras.tensorflow"), "float32").variant
    )
