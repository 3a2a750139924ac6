"""resnet18's torch port under the BatchNorm variants of the case's Keras explanations
(``cases/resnet18/torch_impl.py``, ``VARIANT_KEYS``), so that it can be their reference port
(``equiv run --reference torch.eager``, docs/port-reference.md).

``bn_unbiased_running_var: False`` (Keras and Flax update the moving variance with the biased
batch variance) and ``bn_variance: "one_pass"`` (Keras 3 on torch computes the batch variance as
E[x^2] - E[x]^2) must give, in float64, the numpy reference's numbers under the same variant
(``equiv.reference.layers.batch_norm_train``): loss, gradients, parameters and running
statistics, two steps, to 1e-10 of each array's scale. In float64 the one-pass variance is
the two-pass one to rounding, so that agreement cannot show which was computed: a float32 check
of the module, where the one pass cancels, does. The case's own config must still build
torchvision's model untouched. Planted: the plain port held to the biased-variance reference
agrees everywhere but in the running variance, where the check fails.
"""

from __future__ import annotations

from functools import cache
from importlib.util import find_spec

import numpy as np
import pytest

from cases.resnet18.spec import SPEC, STATE_NAMES

pytestmark = pytest.mark.skipif(
    find_spec("torch") is None or find_spec("torchvision") is None,
    reason="torch and torchvision are not installed",
)

SEED = 0
STEPS = 2
#: float64: the port and the reference differ by summation order only (measured: 3.5e-11 of an
#: array's scale at step 1, the gradients; 5e-13 at step 0)
RTOL = 1e-10

BIASED = (("bn_unbiased_running_var", False),)
ONE_PASS = (("bn_variance", "one_pass"),)
BOTH = (*BIASED, *ONE_PASS)


def port(variant: tuple):
    from cases.resnet18 import torch_impl
    from equiv.backends.torch import TorchEager

    backend = TorchEager()
    backend.configure(1)
    return torch_impl.Trainer(SPEC.make_state(SEED, "float64", variant), backend)


@cache
def stepped_port(variant: tuple) -> tuple:
    """The port under ``variant`` and its records of STEPS steps (cached: the module's tests
    share them)."""
    trainer = port(variant)
    out = []
    for _ in range(STEPS):
        trainer.run_step()
        out.append(trainer.record())
    return trainer, tuple(out)


@cache
def reference_records(variant: tuple) -> tuple:
    from equiv.reference.trainer import ReferenceTrainer

    trainer = ReferenceTrainer(SPEC, SPEC.make_state(SEED, "float64", variant))
    out = []
    for _ in range(STEPS):
        trainer.run_step()
        out.append(trainer.record())
    return tuple(out)


@pytest.fixture(autouse=True, scope="module")
def _release_the_cached_runs():
    """The cached ports and records (0.7 GB together) go with the module's last test: an xdist
    worker runs other modules' resnet18 cells after it."""
    yield
    stepped_port.cache_clear()
    reference_records.cache_clear()


def assert_agree(ours, theirs, fields=("grads", "params", "state"), loss=True) -> None:
    """Every step's loss and every array of ``fields`` within RTOL of the reference's scale."""
    assert len(ours) == len(theirs) == STEPS
    for step, (a, r) in enumerate(zip(ours, theirs, strict=True)):
        if loss:
            assert abs(float(a.loss) - float(r.loss)) <= RTOL * abs(float(r.loss)), step
        for field in fields:
            mine, want = getattr(a, field), getattr(r, field)
            assert set(mine) == set(want), (step, field)
            for name, value in want.items():
                scale = float(np.max(np.abs(value)))
                error = float(np.max(np.abs(np.asarray(mine[name]) - value)))
                assert error <= RTOL * scale, (
                    f"step {step} {field} {name}: {error:.3g} / {scale:.3g}"
                )


# resnet18's numpy reference steps (its 1.7 GB reference, twice per variant) are the slow part:
# `pytest -m slow`, as test_resnet18_torch.py's heavy checks are
@pytest.mark.slow
@pytest.mark.parametrize("variant", [(), BIASED, BOTH], ids=["plain", "biased", "biased_one_pass"])
def test_the_port_agrees_with_the_reference_under_the_variant(variant):
    assert_agree(stepped_port(variant)[1], reference_records(variant))


@pytest.mark.slow
def test_planted_the_plain_port_misses_the_biased_running_variance():
    """The plain port against the biased-variance reference: the forward, the gradients and
    the parameters do not see the running statistics in training mode and agree; the running
    variance is the variant's whole effect, and the check fails there."""
    plain, biased = stepped_port(())[1], reference_records(BIASED)
    assert_agree(plain, biased, fields=("grads", "params"))
    with pytest.raises(AssertionError, match="running_var"):
        assert_agree(plain, biased, fields=("state",), loss=False)


def test_the_case_config_builds_torchvisions_batchnorm_untouched():
    from torch import nn

    from cases.resnet18.torch_impl import VariantBatchNorm2d

    plain = stepped_port(())[0]
    kinds = {type(m) for m in plain.net.modules() if isinstance(m, nn.BatchNorm2d)}
    assert kinds == {nn.BatchNorm2d}
    variant = stepped_port(BOTH)[0]
    norms = [m for m in variant.net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert {type(m) for m in norms} == {VariantBatchNorm2d} and len(norms) == 20
    assert all(m.one_pass and not m.unbiased_running_var for m in norms)
    # the same names, so that the canonical state and load_state reach the same tensors
    assert list(variant.net.state_dict()) == list(plain.net.state_dict())
    assert set(STATE_NAMES) <= set(variant.buffers)


def test_one_pass_cancels_where_the_mean_is_large_against_the_spread():
    """In float32, E[x^2] - E[x]^2 of values 1000 +- 0.1 loses the variance to cancellation
    (E[x^2] ~ 1e6, one ulp 0.06); two passes keep it. The running variance (momentum 1: the
    batch's biased variance) shows which the module computed."""
    import torch
    from torch import nn

    from cases.resnet18.torch_impl import VariantBatchNorm2d

    rng = np.random.default_rng(0)
    x64 = 1000.0 + 0.1 * rng.standard_normal((4, 2, 8, 8))
    x = torch.from_numpy(x64.astype(np.float32))
    truth = x.double().var(dim=(0, 2, 3), unbiased=False)
    variances = {}
    for one_pass in (False, True):
        bn = VariantBatchNorm2d(nn.BatchNorm2d(2, momentum=1.0), False, one_pass)
        bn(x)
        variances[one_pass] = bn.running_var.double()
    two_pass_error = float((variances[False] - truth).abs().max() / truth.max())
    one_pass_error = float((variances[True] - truth).abs().max() / truth.max())
    assert two_pass_error < 1e-3 < 0.1 < one_pass_error
    want = (x * x).mean(dim=(0, 2, 3)) - x.mean(dim=(0, 2, 3)) ** 2
    torch.testing.assert_close(variances[True].float(), want, rtol=0, atol=0)


def test_the_keras_explanations_are_expressible_on_the_torch_reference_port():
    from equiv.backends.reference_port import variant_refusal
    from equiv.case import get_case

    spec = get_case("resnet18").against("torch.eager")
    for explanation in SPEC.explanations:
        assert variant_refusal(spec, tuple(explanation.variant.items())) is None, explanation
