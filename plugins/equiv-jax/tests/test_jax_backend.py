"""What the conformance kit cannot know about JAX: traces, the custom backward, Adam, flags."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution

import numpy as np
import pytest
from equiv.backends.implementations import ImplSource, Patch
from equiv.case import builtin_cases, get_case
from equiv.records import Cell
from equiv.reference.trainer import ReferenceTrainer
from equiv.registry import get_backend
from equiv.running.runner import RunOptions, run_cell

try:
    distribution("equiv-jax")
except PackageNotFoundError:
    pytest.skip(
        "equiv-jax is not installed (pip install -e plugins/equiv-jax)", allow_module_level=True
    )

SHORT = RunOptions.verdict_only(steps=6)
#: the JAX backend's own behaviour; case packages run in the matrix. resnet18's compiles take
#: a minute or more per cell (eager: each primitive of its first step), so it runs under -m slow
CASES = [pytest.param(c, marks=pytest.mark.slow) if c == "resnet18" else c for c in builtin_cases()]


@pytest.mark.parametrize("case", CASES)
def test_jit_traces_each_step_function_once(case):
    result = run_cell(Cell(case, "jax.jit", "float64"), SHORT, benchmark=False)
    if result.status == "skip":
        pytest.skip(result.reason)
    assert result.status == "pass", result.reason
    assert result.traces == 1, f"{case}: {result.traces} traces in {result.compared_steps} steps"


def test_eager_is_not_compiled():
    result = run_cell(Cell("two_layer_mlp", "jax.eager", "float64"), SHORT, benchmark=False)
    assert result.status == "pass", result.reason
    assert result.traces is None


@pytest.mark.parametrize("case", CASES)
def test_eager_steps_stop_compiling_after_the_first(case):
    """Eager JAX compiles each primitive once and then reuses it: a step that compiles anew
    every time (as differentiating ``lax.cond`` op by op did in static_graph_step, ~0.1 s a
    step) makes an eager cell many times slower and its timings meaningless."""
    import jax

    spec = get_case(case)
    state = spec.make_state(0, "float64")
    backend = get_backend("jax.eager")
    backend.configure(RunOptions().threads)
    trainer = backend.build_trainer(
        spec, state, ImplSource(backend.implementation_module(spec)).load()
    )
    for _ in range(2):
        trainer.run_step()
        trainer.record()
    compiles = []

    def listener(event, duration_secs, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration_secs)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for _ in range(4):
            trainer.run_step()
            trainer.record()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not compiles, f"{case}: {len(compiles)} compilations in 4 eager steps after the first 2"


@pytest.mark.parametrize("backend", ["jax.eager", "jax.jit"])
def test_the_custom_vjp_backward_is_the_one_used(backend):
    """A wrong hand-written backward must show in the gradients at step 0: so the gradient
    does go through sigmoid_bwd, not through JAX differentiating the forward."""
    module = get_backend(backend).implementation_module(get_case("sigmoid_custom_op"))
    wrong = ImplSource(module, (Patch("grad_y * y * (1.0 - y)", "grad_y * y * (1.0 + y)"),))
    result = run_cell(Cell("sigmoid_custom_op", backend, "float64"), SHORT, impl=wrong)
    assert result.status == "fail", result.reason
    div = result.first_divergence
    assert (div.step, div.quantity, div.name) == (0, "grads", "w1")


@pytest.mark.parametrize("backend", ["jax.eager", "jax.jit"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_hand_written_optimizers_follow_the_reference(backend, optimizer):
    """Adam by hand, against equiv.optim.Adam (torch.optim.Adam's rule), on keras_sequential's
    model: equal to float64 rounding over 30 steps."""
    spec = get_case("keras_sequential")
    state = spec.make_state(0, "float64")
    cfg = {**state.config, "optimizer": optimizer, "beta_1": 0.9, "beta_2": 0.999}
    cfg.update(epsilon=1e-8, lr=1e-3)
    state = dataclasses.replace(state, config=cfg)
    jax_backend = get_backend(backend)
    jax_backend.configure(RunOptions().threads)
    module = ImplSource(jax_backend.implementation_module(spec)).load()
    trainer = jax_backend.build_trainer(spec, state, module)
    reference = ReferenceTrainer(spec, state)
    for _ in range(30):
        trainer.run_step()
        reference.run_step()
    got, want = trainer.record(), reference.record()
    for name, value in want.params.items():
        np.testing.assert_allclose(got.params[name], value, rtol=0, atol=1e-12)
    assert abs(got.loss - want.loss) <= 1e-12 * abs(want.loss)


def test_importing_the_adapter_does_not_import_jax():
    """``equiv list`` loads every plugin's entry point: it must stay framework-free."""
    code = "import sys, equiv_jax.backend; sys.exit('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_configure_sets_x64_and_the_xla_thread_flag_before_xla_starts():
    code = (
        "import os, jax, equiv_jax.backend as b; b.JaxEager().configure(1);"
        "import jax.numpy as jnp; x = jnp.ones(2, dtype='float64');"
        "print(os.environ['XLA_FLAGS'], jax.config.jax_enable_x64, x.dtype)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--xla_cpu_multi_thread_eigen=false" in out.stdout
    assert "--xla_gpu_deterministic_ops=true" in out.stdout
    assert out.stdout.split()[-2:] == ["True", "float64"]


@pytest.mark.parametrize("backend_id", ["jax.eager", "jax.jit", "keras.jax"])
def test_a_cells_end_empties_jaxs_compilation_caches(backend_id):
    """JAX keeps every compiled program for the process's lifetime (after a resnet18 cell on
    keras.jax: 1.5 GB of a 2.4 GB worker); the backend drops them once a cell is done."""
    if reason := get_backend(backend_id).availability():
        pytest.skip(reason)
    import jax

    @jax.jit
    def step(x):
        return x * 2.0 + 1.0

    step(np.ones(3))
    assert step._cache_size() == 1
    get_backend(backend_id).release_caches()
    assert step._cache_size() == 0
