"""parallel_blocks: the product-ReLU kink radius, the trajectory its spec promises, and a
planted sum-instead-of-product caught at step 0."""

import numpy as np
import pytest

from cases.parallel_blocks.reference import block_forward
from equiv.backends.implementations import ImplSource, Patch
from equiv.backends.registry import get_backend
from equiv.contract.case import get_case
from equiv.contract.records import Cell
from equiv.reference import numerics
from equiv.reference.kinks import Flip, product_radius
from equiv.reference.trainer import ReferenceTrainer
from equiv.running.runner import RunOptions, run_cell
from equiv.tolerance.policy import _calibrate_cached

EPS32 = float(np.finfo(np.float32).eps)

#: the planted bug: the block adds its two affine maps instead of multiplying them
SUM_NOT_PRODUCT = Patch("return (h1 * h2).clamp(min=0)", "return (h1 + h2).clamp(min=0)")


def product_case():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4))
    params = {
        "w1": rng.standard_normal((4, 3)),
        "b1": rng.standard_normal(3),
        "w2": rng.standard_normal((4, 3)),
        "b2": rng.standard_normal(3),
    }
    h1 = x @ params["w1"] + params["b1"]
    h2 = x @ params["w2"] + params["b2"]
    return x, params, h1, h2


def test_product_radius_is_first_order_in_both_factors():
    x, params, h1, h2 = product_case()
    drift = {"w1": np.full((4, 3), 1e-6), "b2": np.full(3, 2e-6)}
    flip = Flip(EPS32, drift=drift)
    r1 = EPS32 * (np.abs(x) @ np.abs(params["w1"]) + np.abs(params["b1"]))
    r1 += np.abs(x) @ drift["w1"]
    r2 = EPS32 * (np.abs(x) @ np.abs(params["w2"]) + np.abs(params["b2"])) + drift["b2"]
    expected = np.abs(h2) * r1 + np.abs(h1) * r2 + EPS32 * np.abs(h1 * h2)
    found = product_radius(flip, h1, h2, x, params, "w1", "b1", "w2", "b2")
    np.testing.assert_allclose(found, expected, rtol=1e-12)


def test_product_relu_mask_records_and_flips_units_within_the_radius():
    """Exact numerics give h1 * h2 > 0; the calibration's recording numerics give the same
    and keep it; its flipping numerics flip what lies within the radius."""
    x, params, h1, h2 = product_case()
    names = ("w1", "b1", "w2", "b2")
    plain = numerics.EXACT.product_relu_mask(h1, h2, x, params, *names)
    np.testing.assert_array_equal(plain, h1 * h2 > 0)
    recorder = numerics.recording()
    np.testing.assert_array_equal(recorder.product_relu_mask(h1, h2, x, params, *names), plain)
    np.testing.assert_array_equal(recorder.flip.masks["w1"], plain)
    # A unit put exactly at the kink (h1 = 0) is within any radius: it takes the side opposite
    # to the recorded reference's; the others, far from the kink at eps32, keep their own.
    h1 = h1.copy()
    h1[2, 1] = 0.0
    recorder.flip.masks["w1"] = np.ones_like(plain)
    flipper = numerics.flipping(EPS32, recorder)
    flipped = flipper.product_relu_mask(h1, h2, x, params, *names)
    assert not flipped[2, 1]
    radius = product_radius(flipper.flip, h1, h2, x, params, *names)
    far = np.abs(h1 * h2) > radius
    np.testing.assert_array_equal(flipped[far], (h1 * h2 > 0)[far])


def test_loss_falls_and_the_product_relu_is_neither_off_nor_on():
    spec = get_case("parallel_blocks")
    state = spec.make_state(0, "float64")
    trainer = ReferenceTrainer(spec, state)
    for _ in range(150):
        trainer.run_step()
        if trainer.t == 1:
            first = trainer.record().loss
    assert trainer.record().loss < 1e-2 * first
    for params in (state.params, trainer.params):
        a1, _ = block_forward(state.data["x"], params, "p1")
        a2, _ = block_forward(a1, params, "p2")
        assert 0.3 < (a1 > 0).mean() < 0.7
        assert 0.3 < (a2 > 0).mean() < 0.7


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sum_instead_of_product_diverges_in_the_loss_at_step_0(dtype):
    if reason := get_backend("torch.eager").availability():
        pytest.skip(reason)
    module = get_backend("torch.eager").implementation_module(get_case("parallel_blocks"))
    impl = ImplSource(module, (SUM_NOT_PRODUCT,))
    options = RunOptions.verdict_only(steps=4)
    cell = Cell("parallel_blocks", "torch.eager", dtype)
    result = run_cell(cell, options, impl=impl)
    assert result.status == "fail", result.reason
    div = result.first_divergence
    assert (div.step, div.quantity) == (0, "loss")
    assert run_cell(cell, options).status == "pass"


def test_a_second_blocks_radius_includes_its_computed_inputs_radius():
    """x_from: block 2's input is block 1's float32 output, off by up to block 1's radius."""
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    flip = Flip(EPS32, radii={"p1_w1": np.full((4, 3), 1e-6)})
    plain = flip.radius(x, {"w": w}, "w")
    assert np.allclose(
        flip.radius(x, {"w": w}, "w", x_from="p1_w1") - plain, 1e-6 * (np.ones((4, 3)) @ np.abs(w))
    )


SEED7 = Cell("parallel_blocks", "numpy", "float32")
SEED7_OPTIONS = RunOptions.verdict_only(seed=7, steps=12)


def test_seed_7_float32_passes_and_fails_without_the_input_radius(monkeypatch):
    """The sweep's false alarm (seed 7, step 11, grads p2_w1 at 3.3 times the tolerance, on
    numpy, tf.xla and both JAX modes): the float32 shadow must flip the second-block unit that
    a float32 implementation may flip because its input, block 1's output, is float32 too."""
    _calibrate_cached.cache_clear()
    assert run_cell(SEED7, SEED7_OPTIONS).status == "pass"
    real = Flip.radius
    monkeypatch.setattr(
        Flip, "radius", lambda self, x, p, w, b=None, x_from=None: real(self, x, p, w, b)
    )
    _calibrate_cached.cache_clear()
    try:
        result = run_cell(SEED7, SEED7_OPTIONS)
    finally:
        _calibrate_cached.cache_clear()
    assert result.status == "fail"
    assert result.first_divergence.step == 11
