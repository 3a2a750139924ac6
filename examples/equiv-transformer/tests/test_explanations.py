"""Each declared difference is needed: no key of a cell's variant can be dropped.

The runner proves an ``explained`` cell by checking that the merged variant matches the port
and the plain reference does not. That alone would accept a variant with a key that changes
nothing, or one whose effect hides below the tolerance. Here, for every cell that declares a
variant, each key is dropped in turn and the reference run without it is compared with the
reference run with the whole variant, under the tolerance the runner holds that cell to: it
must part from it by more than twice that tolerance at some step. A port within tolerance of
the whole variant is then more than one tolerance away from the variant without that key, so
every key is needed to explain it. numpy only: no framework runs here.
"""

import math

import numpy as np
import pytest
from equiv.case import get_case
from equiv.checking.verdict import declared_explanation
from equiv.optim import make_optimizer
from equiv.reference.trainer import ReferenceTrainer
from equiv.registry import get_backend
from equiv.tolerance.policy import calibrate, max_abs_diff, quantity_keys, record_values

from equiv_transformer.transformer_block.reference import gelu

STEPS = 20
CASES = ("transformer_block", "transformer_block_defaults")
#: one backend per set of declarations (jax.jit declares what jax.eager does)
BACKENDS = ("keras.tensorflow", "keras.torch", "keras.jax", "jax.eager")
DTYPES = ("float32", "float64")


def reference_run(spec, overrides: dict, steps: int) -> list[dict]:
    state = spec.make_state(0, "float64", tuple(sorted(overrides.items())))
    trainer = ReferenceTrainer(spec, state)
    out = []
    for _ in range(steps):
        trainer.run_step()
        out.append(record_values(trainer.record()))
    return out


def separation(spec, cal, one: list[dict], other: list[dict]) -> float:
    """The largest |one - other| over steps and quantities, in units of the tolerance."""
    return max(
        max_abs_diff(a[q], b[q]) / cal.tol[q][t]
        for t, (a, b) in enumerate(zip(one, other, strict=True))
        for q in quantity_keys(spec)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend_id", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_every_declared_key_is_needed(case, backend_id, dtype):
    spec = get_case(case)
    explanation = declared_explanation(spec, get_backend(backend_id), dtype)
    if explanation is None:
        pytest.skip(f"{case} declares nothing for {backend_id} {dtype}")
    cal = calibrate(spec, 0, STEPS, dtype, explanation.variant_key())
    overrides = {k: v for k, v in explanation.variant.items() if k != "compute_dtype"}
    whole = reference_run(spec, overrides, STEPS)
    weak = {}
    for key in overrides:
        less = {k: v for k, v in overrides.items() if k != key}
        gap = separation(spec, cal, whole, reference_run(spec, less, STEPS))
        if gap <= 2.0:
            weak[key] = gap
    assert not weak, (
        f"{case} {backend_id} {dtype}: without these keys the variant stays within "
        f"{{key: tolerances}} {weak} of the whole one, so they explain nothing there"
    )


def test_the_defaults_case_declares_what_the_matched_case_sets():
    """The defaults case's Keras and JAX variants name every setting the matched case passes
    explicitly, with the framework's default value, and nothing the reference does not read."""
    matched, defaults = get_case("transformer_block"), get_case("transformer_block_defaults")
    keras = declared_explanation(defaults, get_backend("keras.torch"), "float32").variant
    jax = declared_explanation(defaults, get_backend("jax.eager"), "float32").variant
    assert keras == {
        "optimizer": "adamw_epsilon_hat",
        "ln_eps": 1e-3,
        "weight_decay": 0.004,
        "epsilon": 1e-7,
    }
    assert jax == {"gelu": "tanh", "ln_eps": 1e-6, "weight_decay": 1e-4}
    for key in (*keras, *jax):
        assert key in matched.config, f"{key} is not a key of the reference's config"
    torch = declared_explanation(defaults, get_backend("torch.eager"), "float64")
    assert torch is None, "torch's defaults are the reference's settings: nothing to declare"


def test_gelu_with_tensorflows_float32_constant():
    """The variant is TF's float64 formula, 0.5 x erfc(-x c) with c = float32(1/sqrt 2), and
    its backward is that function's derivative (central differences)."""
    x = np.linspace(-4.0, 4.0, 41)
    cfg = {"gelu": "exact", "gelu_inv_sqrt2": "float32"}
    c = float(np.float32(0.7071067811865476))
    want = np.array([0.5 * v * math.erfc(-v * c) for v in x])
    y, back = gelu(x, cfg)
    np.testing.assert_allclose(y, want, rtol=1e-15, atol=1e-16)
    exact, _ = gelu(x, {"gelu": "exact"})
    assert np.max(np.abs(y - exact)) > 1e-9, "the float32 constant changes GELU's output"
    h = 1e-6
    numeric = (gelu(x + h, cfg)[0] - gelu(x - h, cfg)[0]) / (2 * h)
    np.testing.assert_allclose(back(np.ones_like(x)), numeric, rtol=1e-8, atol=1e-10)


def test_weight_decay_dtype_rounds_the_decay_to_float32():
    """``weight_decay_dtype: "float32"`` is Keras-on-TF's float64 AdamW: its decay is the
    float32 rounding of wd, nothing else changes."""
    p = {"w": np.linspace(-1.0, 1.0, 7)}
    g = {"w": np.linspace(0.3, -0.2, 7)}
    base = {"optimizer": "adamw_epsilon_hat", "lr": 1e-2, "epsilon": 1e-7}
    rounded = make_optimizer({**base, "weight_decay": 0.004, "weight_decay_dtype": "float32"})
    by_hand = make_optimizer({**base, "weight_decay": float(np.float32(0.004))})
    plain = make_optimizer({**base, "weight_decay": 0.004})
    a, b, c = rounded.step(p, g)["w"], by_hand.step(p, g)["w"], plain.step(p, g)["w"]
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_a_key_that_changes_nothing_is_not_needed():
    """The check above, on a key planted to change nothing (beta_1 at the reference's own
    value): its separation is 0 tolerances, so a declaration carrying it would fail there."""
    spec = get_case("transformer_block_defaults")
    variant = {"ln_eps": 1e-3}
    cal = calibrate(spec, 0, STEPS, "float32", tuple(sorted(variant.items())))
    whole = reference_run(spec, {**variant, "beta_1": spec.config["beta_1"]}, STEPS)
    assert separation(spec, cal, whole, reference_run(spec, variant, STEPS)) <= 2.0
    assert separation(spec, cal, whole, reference_run(spec, {}, STEPS)) > 2.0
