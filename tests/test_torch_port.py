"""``equiv.support.torch_port.port``: a torch model, its layout, loss and optimizer as a trainer.

Small models (keras_sequential's program at 3-4-2, and a 3-layer MLP) on torch.eager, one
torch.jit build: the round trip of the canonical state, one step against the numpy reference,
planted wrong layouts (a shape, a tensor left out, two square layers swapped), a planted forward
bug found at its layer by the recorded activations, and Adam's state loaded mid-training.
"""

from __future__ import annotations

import numpy as np
import pytest

from equiv import layouts
from equiv.backends.registry import get_backend
from equiv.contract.case import get_case
from equiv.contract.records import CaseState
from equiv.layouts import LayoutError
from equiv.reference.trainer import ReferenceTrainer
from equiv.testing import assert_records_agree

torch = pytest.importorskip("torch")

from cases.keras_sequential import torch_impl as sequential  # noqa: E402
from equiv.support.torch_port import port  # noqa: E402

SIZES = {"N": 5, "D_in": 3, "H": 4, "D_out": 2}


@pytest.fixture(scope="module")
def eager():
    backend = get_backend("torch.eager")
    if reason := backend.availability():
        pytest.skip(reason)
    backend.configure(1)
    return backend


def small_state(case="keras_sequential", seed=0, **sizes):
    """The case's draw at small sizes (its config otherwise), float64."""
    spec = get_case(case)
    cfg = {**spec.config, **SIZES, **sizes}
    data, params = spec.draw(np.random.default_rng(seed), cfg)
    return spec, CaseState(data, params, cfg, "float64")


def sequential_model(cfg):
    return torch.nn.Sequential(
        torch.nn.Linear(cfg["D_in"], cfg["H"]),
        torch.nn.ReLU(),
        torch.nn.Linear(cfg["H"], cfg["D_out"]),
    )


def build(state, backend, layout=None, model=None, **kw):
    cfg = state.config
    return port(
        state,
        backend,
        model or sequential_model(cfg),
        layout=layout or sequential.layout(cfg),
        loss=torch.nn.functional.mse_loss,
        optimizer=lambda params: sequential.make_optimizer(params, cfg),
        **kw,
    )


def reference_at(spec, state, steps):
    reference = ReferenceTrainer(spec, state)
    for _ in range(steps):
        reference.run_step()
    return reference


# -- the canonical state, both ways ---------------------------------------------------------


def test_a_built_port_holds_the_states_parameters_bit_for_bit(eager):
    spec, state = small_state()
    trainer = build(state, eager)
    held = trainer.layout.observed(trainer.framework())
    assert list(held) == list(spec.param_names)
    for name, value in state.params.items():
        assert np.array_equal(held[name], value), name
    assert np.array_equal(trainer.module[0].weight.detach().numpy(), state.params["w1"].T)


def test_a_loaded_state_is_held_bit_for_bit_and_stepped_as_the_reference_steps(eager):
    spec, state = small_state()
    trainer = build(state, eager)
    trainer.run_step()
    later = reference_at(spec, state, 3)
    trainer.load_state(later.training_state())
    held = trainer.layout.observed(trainer.framework())
    for name, value in later.training_state().params.items():
        assert np.array_equal(held[name], value), name
    trainer.run_step()
    later.run_step()
    assert_records_agree(trainer.record(), later.record(), 1e-12)


def test_one_step_is_the_references_step(eager):
    spec, state = small_state()
    trainer = build(state, eager)
    reference = reference_at(spec, state, 1)
    trainer.run_step()
    ours, theirs = trainer.record(), reference.record()
    assert ours.loss == pytest.approx(theirs.loss, rel=1e-14)
    for group in ("grads", "params"):
        assert list(getattr(ours, group)) == list(spec.param_names)
        for name, value in getattr(theirs, group).items():
            assert np.allclose(getattr(ours, group)[name], value, rtol=0, atol=1e-14), name
            assert getattr(ours, group)[name].dtype == np.float64


def test_the_case_ports_build_through_it(eager):
    """keras_sequential's own ``build`` is a port: its record is the reference's step."""
    spec, state = small_state()
    trainer = sequential.build(state, eager)
    trainer.run_step()
    assert_records_agree(trainer.record(), reference_at(spec, state, 1).record(), 1e-12)


# -- planted wrong layouts --------------------------------------------------------------------


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def untransposed(fan_in, fan_out):
    """torch's Linear declared as Keras holds a Dense: the kernel not transposed."""
    return layouts.Layout(
        "untransposed",
        {"kernel": (fan_in, fan_out), "bias": (fan_out,)},
        {"weight": (fan_in, fan_out), "bias": (fan_out,)},
        (layouts.copy("kernel", "weight"), layouts.copy("bias", "bias")),
    )


def test_a_kernel_declared_untransposed_is_a_one_line_shape_error(eager):
    _, state = small_state()
    wrong = layouts.compose(
        "planted", {"0": untransposed(3, 4), "2": layouts.torch_linear(4, 2)}
    ).named({"0.kernel": "w1", "0.bias": "b1", "2.kernel": "w2", "2.bias": "b2"})
    with pytest.raises(LayoutError) as excinfo:
        build(state, eager, wrong)
    assert one_line(excinfo).endswith("model tensor 0.weight is (4, 3), layout says (3, 4)")


def test_a_model_tensor_the_layout_leaves_out_is_named(eager):
    _, state = small_state()
    no_bias = layouts.compose(
        "planted", {"0": layouts.torch_linear(3, 4), "2": layouts.torch_linear(4, 2, bias=False)}
    )
    wrong = no_bias.named({"0.kernel": "w1", "0.bias": "b1", "2.kernel": "w2"})
    with pytest.raises(LayoutError) as excinfo:
        build(state, eager, wrong)
    assert "model tensor 2.bias is not in the layout" in one_line(excinfo)


def test_a_layout_tensor_the_model_lacks_is_named(eager):
    _, state = small_state()
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2, bias=False)
    )
    with pytest.raises(LayoutError) as excinfo:
        build(state, eager, model=model)
    assert "layout tensor 2.bias (2,) is not in the model" in one_line(excinfo)


def test_two_square_layers_swapped_load_without_error_and_compute_another_loss(eager):
    """Equal shapes: no check can see it; the first step's loss does."""
    spec, state = small_state(D_in=3, H=3, D_out=3)
    swapped = sequential.layout(state.config).named(
        {"w1": "w2", "b1": "b2", "w2": "w1", "b2": "b1"}
    )
    trainer = build(state, eager, swapped)
    trainer.run_step()
    theirs = reference_at(spec, state, 1).record()
    assert abs(trainer.record().loss - theirs.loss) > 1e-3 * theirs.loss
    right = build(state, eager)
    right.run_step()
    assert right.record().loss == pytest.approx(theirs.loss, rel=1e-14)


# -- activations ------------------------------------------------------------------------------


def mlp(middle):
    """Linear, ReLU, Linear, ``middle``, Linear."""
    return torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4), middle, torch.nn.Linear(4, 2)
    )


MLP_NAMES = {f"{i}.{p}": f"{p[0]}{i // 2 + 1}" for i in (0, 2, 4) for p in ("kernel", "bias")}
MLP = layouts.compose(
    "mlp",
    {
        "0": layouts.torch_linear(3, 4),
        "2": layouts.torch_linear(4, 4),
        "4": layouts.torch_linear(4, 2),
    },
).named(MLP_NAMES)
#: the three layers, and the two parameterless modules between them, in execution order
ORDER = ("0", "relu", "2", "act", "4")


def mlp_state():
    rng = np.random.default_rng(1)
    params = {
        MLP_NAMES[f"{i}.{p}"]: rng.standard_normal(shape)
        for i, (a, b) in zip((0, 2, 4), ((3, 4), (4, 4), (4, 2)), strict=True)
        for p, shape in (("kernel", (a, b)), ("bias", (b,)))
    }
    data = {"x": rng.standard_normal((5, 3)), "y": rng.standard_normal((5, 2))}
    return CaseState(data, params, {"lr": 0.1, "optimizer": "sgd"}, "float64")


def mlp_activations(backend, middle):
    trainer = build(mlp_state(), backend, MLP, mlp(middle), activations={"relu": "1", "act": "3"})
    trainer.run_step()
    return trainer.record().activations


def test_a_wrong_module_in_the_middle_shows_first_at_its_own_output(eager):
    right = mlp_activations(eager, torch.nn.Tanh())
    wrong = mlp_activations(eager, torch.nn.Sigmoid())  # planted: the wrong nonlinearity
    assert set(right) == set(ORDER)
    differs = [name for name in ORDER if not np.array_equal(right[name], wrong[name])]
    assert differs == ["act", "4"]


def test_activations_are_each_modules_output_in_the_canonical_layout(eager):
    state = mlp_state()
    acts = mlp_activations(eager, torch.nn.Tanh())
    p, x = state.params, state.data["x"]
    h1 = x @ p["k1"] + p["b1"]
    h2 = np.maximum(h1, 0) @ p["k2"] + p["b2"]
    expected = {"0": h1, "relu": np.maximum(h1, 0), "2": h2, "act": np.tanh(h2)}
    expected["4"] = expected["act"] @ p["k3"] + p["b3"]
    for name, value in expected.items():
        assert np.allclose(acts[name], value, rtol=1e-13, atol=1e-13), name


def test_torch_jit_records_one_tensor_modules_through_torchscript_hooks(eager):
    jit = get_backend("torch.jit")
    scripted = mlp_activations(jit, torch.nn.Tanh())
    plain = mlp_activations(eager, torch.nn.Tanh())
    assert set(scripted) == set(plain)
    for name in ORDER:
        assert np.allclose(scripted[name], plain[name], rtol=1e-14, atol=1e-14), name


def test_torch_jit_declares_activations_it_cannot_record_not_observed(eager):
    """nn.MultiheadAttention takes three tensors: no TorchScript hook of one signature
    records it. Not observed only where the case compares it."""

    class Attend(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(4, 2, batch_first=True)
            self.out = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.out(self.attn(x, x, x, need_weights=False)[0])

    layout = layouts.compose(
        "attend",
        {"attn": layouts.torch_multihead_attention(4, 2), "out": layouts.torch_linear(4, 2)},
    )
    rng = np.random.default_rng(2)
    params = {n: rng.standard_normal(s) for n, s in layout.canonical.items()}
    data = {"x": rng.standard_normal((2, 3, 4)), "y": rng.standard_normal((2, 3, 2))}
    state = CaseState(data, params, {"lr": 0.1, "optimizer": "sgd"}, "float64")
    jit = get_backend("torch.jit")
    compared = build(state, jit, layout, Attend(), activation_names=("attn", "out"))
    assert "attn" in compared.not_observed["activations"]
    compared.run_step()
    assert set(compared.record().activations) == {"out"}
    assert build(state, jit, layout, Attend(), activation_names=("out",)).not_observed == {}
    assert build(state, eager, layout, Attend(), activation_names=("attn",)).not_observed == {}


# -- Adam's state -----------------------------------------------------------------------------


def test_adams_moments_and_step_count_load_through_the_layout(eager):
    spec, state = small_state("keras_sequential_adam")
    trainer = build(state, eager)
    later = reference_at(spec, state, 3)
    saved = later.training_state()
    assert {"m/w1", "v/w1", "t"} <= set(saved.optimizer)
    trainer.load_state(saved)
    held = trainer.optimizer.state[trainer.module[0].weight]
    assert np.array_equal(held["exp_avg"].numpy(), saved.optimizer["m/w1"].T)
    assert np.array_equal(held["exp_avg_sq"].numpy(), saved.optimizer["v/w1"].T)
    assert float(held["step"]) == 3.0
    trainer.run_step()
    later.run_step()
    assert_records_agree(trainer.record(), later.record(), 1e-12)


def test_without_the_moments_the_loaded_adam_port_is_off(eager):
    """Planted: the parameters loaded, Adam's state not: torch restarts it at step 1."""
    spec, state = small_state("keras_sequential_adam")
    trainer = build(state, eager)
    later = reference_at(spec, state, 3)
    saved = later.training_state()
    trainer.load_state(type(saved)(saved.step, saved.params, {}, saved.state))
    trainer.run_step()
    later.run_step()
    with pytest.raises(AssertionError):
        assert_records_agree(trainer.record(), later.record(), 1e-12)
