"""``load_state`` in every JAX port: the reference's training state (parameters, optimizer state
with Adam's host-side step count, BatchNorm's running statistics, the previous loss) put into
the running port, whose next step is then the reference's, to float64 rounding.

Each check: the reference runs k steps, the port loads the reference's training state and
both step once; loss and parameters (and resnet18's running statistics) agree to 1e-10,
relative. The port steps once first (a minibatch port k times: where its data pipeline stands
is its own, never loaded), so that what it loads replaces state of its own. Planted ports that
forget a part of the state (Adam's step count or moments, the momentum buffers, the running
statistics, the previous loss) must fail the same check.

resnet18's checks are marked ``slow`` (XLA compiles its step for ~20 s a process and mode on
a 2-core machine; one jax.jit port serves all of them); the other ports take ~1-3 s each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, distribution
from importlib.util import find_spec

import numpy as np
import pytest
from equiv.backends.implementations import ImplSource
from equiv.case import get_case
from equiv.contract.records import StepRecord, TrainingState
from equiv.contract.trainer import StateNotLoadable
from equiv.reference import optim as reference_optim
from equiv.reference.trainer import ReferenceTrainer
from equiv.registry import get_backend
from equiv.testing import assert_records_agree

try:
    distribution("equiv-jax")
except PackageNotFoundError:
    pytest.skip(
        "equiv-jax is not installed (pip install -e plugins/equiv-jax)", allow_module_level=True
    )
pytest.importorskip("jax", reason="jax is not installed (pip install equiv-jax installs it)")

from equiv_jax import optim  # noqa: E402 - after the skips: it imports jax

BACKENDS = ("jax.eager", "jax.jit")
REL = 1e-10
#: the minibatch ports' data position: step 7 is minibatch_partial's partial batch of 4
MINIBATCH_STEPS = 7
TRANSFORMER = "transformer_block", "transformer_block_defaults"
CASES = [
    "two_layer_mlp",
    "sigmoid_custom_op",
    "dynamic_branching",
    "static_graph_step",
    "keras_sequential",
    "keras_sequential_adam",
    "minibatch",
    "minibatch_partial",
    "parallel_blocks",
    *TRANSFORMER,
]


def spec_of(case: str):
    if case in TRANSFORMER and find_spec("equiv_transformer") is None:
        pytest.skip(
            "equiv-transformer is not installed (pip install -e examples/equiv-transformer)"
        )
    return get_case(case)


def port_and_reference(case: str, backend_id: str, patches=()):
    """A float64 port of ``case`` and the reference that it computes: the plain one, or the
    variant of the difference the case declares for JAX (transformer_block_defaults' GELU,
    LayerNorm eps and AdamW settings)."""
    from equiv.checking.verdict import declared_explanation

    spec = spec_of(case)
    backend = get_backend(backend_id)
    backend.configure(1)
    explanation = declared_explanation(spec, backend, "float64")
    variant = explanation.variant_key() if explanation else ()
    module = ImplSource(backend.implementation_module(spec), tuple(patches)).load()
    port = backend.build_trainer(spec, spec.make_state(0, "float64"), module)
    return port, ReferenceTrainer(spec, spec.make_state(0, "float64", variant))


def default_load(port, resume: TrainingState) -> None:
    port.load_state(resume)


def loaded_next_step(
    port,
    reference: ReferenceTrainer,
    steps: int,
    port_steps: int = 1,
    load: Callable = default_load,
) -> tuple[StepRecord, StepRecord]:
    """The port steps ``port_steps`` times on its own, the reference ``steps`` times; the
    port loads the reference's training state; both step once: their records."""
    for _ in range(port_steps):
        port.run_step()
    for _ in range(steps):
        reference.run_step()
    load(port, reference.training_state())
    port.run_step()
    reference.run_step()
    return port.record(), reference.record()


def check_case(case: str, backend_id: str, load: Callable = default_load, patches=()) -> None:
    port, reference = port_and_reference(case, backend_id, patches)
    if "batch_size" in reference.cfg:  # the port's own data position: at the reference's
        ours, theirs = loaded_next_step(port, reference, MINIBATCH_STEPS, MINIBATCH_STEPS, load)
    else:
        ours, theirs = loaded_next_step(port, reference, 5, 1, load)
    assert_records_agree(ours, theirs, REL)


@pytest.mark.parametrize("backend_id", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_a_loaded_port_takes_the_references_next_step(case, backend_id):
    check_case(case, backend_id)


# -- planted: a part of the state not loaded ---------------------------------------------------


def keeps_step_count(monkeypatch) -> None:
    """Planted: Adam's moments loaded, its host-side step count ``t`` left as the port's own
    (the next step's bias corrections are those of the port's second step)."""
    real = optim.Adam.load

    def load(self, canonical, state, to_native):
        t = self.t
        out = real(self, canonical, state, to_native)
        self.t = t
        return out

    monkeypatch.setattr(optim.Adam, "load", load)


def keeps_moments(monkeypatch) -> None:
    """Planted: Adam's step count loaded, its moments m and v left as the port's own."""
    real = optim.Adam.load

    def load(self, canonical, state, to_native):
        real(self, canonical, state, to_native)
        return state

    monkeypatch.setattr(optim.Adam, "load", load)


@pytest.mark.parametrize("plant", [keeps_step_count, keeps_moments])
@pytest.mark.parametrize("case", ["keras_sequential_adam", "parallel_blocks", "transformer_block"])
def test_a_port_that_keeps_its_own_adam_state_is_off(case, plant, monkeypatch):
    check_case(case, "jax.jit")  # as it is: it passes
    plant(monkeypatch)
    with pytest.raises(AssertionError):
        check_case(case, "jax.jit")


@pytest.mark.parametrize("backend_id", BACKENDS)
@pytest.mark.parametrize("case", ["dynamic_branching", "static_graph_step"])
def test_the_branch_follows_the_loaded_previous_loss(case, backend_id):
    """The reference's loss never falls below the threshold in these cases (every step takes
    w2b): a state whose previous loss is below it must make the loaded port take w2a, as the
    reference resumed from it does."""
    port, _ = port_and_reference(case, backend_id)
    spec = spec_of(case)
    state = spec.make_state(0, "float64")
    reference = ReferenceTrainer(spec, state)
    for _ in range(3):
        reference.run_step()
        port.run_step()
    below = replace(reference.training_state(), prev_loss=reference.cfg["threshold"] - 1.0)
    resumed = ReferenceTrainer(spec, state.resumed(below))
    port.load_state(below)
    port.run_step()
    resumed.run_step()
    theirs = resumed.record()
    assert theirs.branch == "w2a"
    assert_records_agree(port.record(), theirs, REL)


@pytest.mark.parametrize("case", ["dynamic_branching", "static_graph_step"])
def test_a_port_that_keeps_its_own_previous_loss_takes_the_wrong_branch(case, monkeypatch):
    module = ImplSource(get_backend("jax.jit").implementation_module(get_case(case))).load()
    monkeypatch.setattr(module.Trainer, "loaded_prev_loss", lambda self, prev_loss: {})
    with pytest.raises(AssertionError):
        test_the_branch_follows_the_loaded_previous_loss(case, "jax.jit")


def test_momentum_buffers_load_in_torchs_form():
    """The plugin's momentum SGD loads the reference's ``momentum/<p>`` buffers: its next
    update is the reference's; a buffer not loaded (the port's zeros) is another update."""
    import jax.numpy as jnp

    get_backend("jax.eager").configure(1)
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(3, 2)) for _ in range(4)]
    cfg = {"lr": 0.0625, "momentum": 0.875}
    reference = reference_optim.SGD(cfg)
    params = {"w": rng.normal(size=(3, 2))}
    for g in grads[:3]:
        params = reference.step(params, {"w": g})
    sgd = optim.SGD(cfg)
    ours = {"w": jnp.asarray(params["w"])}
    fresh = sgd.init(ours)
    loaded = sgd.load(reference.state_dict(), fresh, jnp.asarray)
    expected = reference.step(params, {"w": grads[3]})["w"]
    new, _ = sgd.update(ours, {"w": jnp.asarray(grads[3])}, loaded, ())
    np.testing.assert_allclose(np.asarray(new["w"]), expected, rtol=1e-14, atol=0)
    unloaded, _ = sgd.update(ours, {"w": jnp.asarray(grads[3])}, fresh, ())
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(np.asarray(unloaded["w"]), expected, rtol=1e-10, atol=0)


# -- what a port cannot load, and what it keeps ------------------------------------------------


def test_a_port_refuses_state_it_does_not_keep_and_stays_as_it_was():
    """two_layer_mlp's port has no optimizer state and no model state; keras_sequential's SGD
    has no momentum: each refusal names the part, and nothing of the port has changed."""
    port, reference = port_and_reference("two_layer_mlp", "jax.jit")
    port.run_step()
    reference.run_step()
    before = dict(port.params)
    good = reference.training_state()
    refused = [
        (replace(good, optimizer={"m/w1": good.params["w1"]}), "m/w1"),
        (replace(good, state={"bn1.running_mean": np.zeros(3)}), "bn1.running_mean"),
        (replace(good, params={**good.params, "w3": good.params["w1"]}), "w3"),
        (replace(good, params={"w1": good.params["w1"]}), "w2"),
        (replace(good, params={**good.params, "w1": good.params["w1"][:3]}), "w1"),
    ]
    for resume, named in refused:
        with pytest.raises(StateNotLoadable, match=named):
            port.load_state(resume)
        assert all(port.params[n] is before[n] for n in before)
    sgd, reference = port_and_reference("keras_sequential", "jax.jit")
    good = reference.training_state()
    with pytest.raises(StateNotLoadable, match="momentum/w1"):
        sgd.load_state(replace(good, optimizer={"momentum/w1": good.params["w1"]}))


def test_a_minibatch_port_keeps_its_own_data_position():
    """Loaded at the reference's step 7 after 3 steps of its own, the port's next batch is its
    own fourth (its pipeline is not part of the canonical state), not the reference's eighth:
    the step differs, by the data alone."""
    port, reference = port_and_reference("minibatch_partial", "jax.jit")
    ours, theirs = loaded_next_step(port, reference, MINIBATCH_STEPS, port_steps=3)
    assert ours.loss != pytest.approx(theirs.loss, rel=1e-3)


@pytest.mark.parametrize(
    "case", ["static_graph_step", "keras_sequential_adam", "parallel_blocks", *TRANSFORMER]
)
def test_loading_does_not_retrace_a_jitted_step(case):
    """The loaded arrays have the types of those they replace (shape, dtype, weak type): the
    jitted step runs on from its one trace."""
    port, reference = port_and_reference(case, "jax.jit")
    backend = port.backend
    port.run_step()
    traces = backend.traces
    for _ in range(3):
        reference.run_step()
        port.load_state(reference.training_state())
        port.run_step()
    assert backend.traces == traces


# -- resnet18: momentum buffers and BatchNorm's running statistics ------------------------------

RESNET18_STEPS = 2


@pytest.fixture(scope="module")
def resnet18():
    """One jax.jit float64 port (one compile), stepped once, and the reference's state after
    step 2 with the record of step 2 from it: each check loads the state into the port anew."""
    port, reference = port_and_reference("resnet18", "jax.jit")
    port.run_step()
    for _ in range(RESNET18_STEPS):
        reference.run_step()
    resume = reference.training_state()
    reference.run_step()
    return port, resume, reference.record()


def resnet18_check(resnet18, load: Callable = default_load) -> None:
    port, resume, theirs = resnet18
    load(port, resume)
    port.run_step()
    ours = port.record()
    assert_records_agree(ours, theirs, REL)
    scale = float(np.max(np.abs(theirs.evaluation["logits"])))
    error = float(np.max(np.abs(ours.evaluation["logits"] - theirs.evaluation["logits"])))
    assert error <= REL * scale


@pytest.mark.slow
def test_resnet18_loaded_takes_the_references_next_step_without_a_retrace(resnet18):
    traces = resnet18[0].backend.traces
    resnet18_check(resnet18)
    resnet18_check(resnet18)  # loaded again over its own step: the same step again
    assert resnet18[0].backend.traces == traces


@pytest.mark.slow
def test_resnet18_eager_loaded_takes_the_references_next_step():
    port, reference = port_and_reference("resnet18", "jax.eager")
    assert_records_agree(*loaded_next_step(port, reference, RESNET18_STEPS), REL)


def keeping(attribute: str) -> Callable:
    """A planted load: everything loaded, then ``attribute`` put back as the port had it."""

    def load(port, resume):
        kept = getattr(port, attribute)
        port.load_state(resume)
        setattr(port, attribute, kept)

    return load


@pytest.mark.slow
@pytest.mark.parametrize("attribute", ["buffers", "stats"])
def test_resnet18_without_its_momentum_buffers_or_running_statistics_is_off(resnet18, attribute):
    with pytest.raises(AssertionError):
        resnet18_check(resnet18, keeping(attribute))
