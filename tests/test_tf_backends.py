"""The TensorFlow and Keras backends: planted bugs are caught where they are planted, compiled
steps trace once, and equiv imports no framework until a cell needs it."""

import os
import subprocess
import sys

import numpy as np
import pytest

from equiv.backends.implementations import ImplSource, Patch
from equiv.backends.registry import get_backend
from equiv.contract.case import builtin_cases, get_case
from equiv.contract.records import Cell
from equiv.running.runner import RunOptions, run_cell
from equiv.running.workers import run_group

OPTIONS = RunOptions.verdict_only(steps=5)
TF_MODES = ["tf.eager", "tf.function", "tf.xla", "tf.v1graph"]
KERAS = ["keras.tensorflow", "keras.torch", "keras.jax"]


def skip_unless_available(backend_id):
    if reason := get_backend(backend_id).availability():
        pytest.skip(reason)


def mutant(case, backend, *patches):
    module = get_backend(backend).implementation_module(get_case(case))
    return ImplSource(module, tuple(Patch(old, new) for old, new in patches))


def run(cell, impl=None):
    """In this process, or in a worker for a backend that needs its own (Keras on torch, jax)."""
    backend = get_backend(cell.backend)
    if backend.needs_own_process:
        (result,) = run_group([(cell, impl)], OPTIONS, env=dict(backend.worker_env))
        return result
    return run_cell(cell, OPTIONS, impl=impl)


def first_divergence(result):
    div = result.first_divergence
    return div.step, div.quantity, div.name, div.phase


FLIPPED_GRAPH_UPDATE = (
    "w.assign_sub(self.lr * g) for w, g in zip(weights",
    "w.assign_add(self.lr * g) for w, g in zip(weights",
)
# Loading a canonical (in, out) kernel as if Keras wanted (out, in), "fixed" with a reshape
# because load_dense rejects the transposed shape.
#: the hidden kernel declared as the transpose reshaped back to the kernel's shape (what a
#: torch (out, in) weight loaded with reshape instead of transpose is): same shape, no error
RESHAPED_KERNEL = (
    ("import keras\n", "import keras\nimport numpy as np\n"),
    (
        '"hidden": layouts.keras_dense(cfg["D_in"], cfg["H"]),',
        '"hidden": layouts.Layout("reshaped", *[{"kernel": (cfg["D_in"], cfg["H"]), '
        '"bias": (cfg["H"],)}] * 2, (layouts.copy("kernel", "kernel", '
        "lambda a: np.reshape(a.T, a.shape), lambda t: np.reshape(t, t.shape[::-1]).T), "
        'layouts.copy("bias", "bias"))),',
    ),
)
WRONG_SIGMOID_BACKWARD = ("return grad_y * y * (1.0 - y)", "return grad_y * y * (1.0 + y)")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_flipped_update_sign_in_the_tf1_graph_diverges_in_the_update_at_step_0(dtype):
    skip_unless_available("tf.v1graph")
    impl = mutant("two_layer_mlp", "tf.v1graph", FLIPPED_GRAPH_UPDATE)
    result = run_cell(Cell("two_layer_mlp", "tf.v1graph", dtype), OPTIONS, impl=impl)
    assert result.status == "fail", result.reason
    assert first_divergence(result) == (0, "params", "w1", "update")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_reshaped_instead_of_transposed_keras_kernel_diverges_in_the_forward_at_step_0(dtype):
    skip_unless_available("keras.tensorflow")
    impl = mutant("keras_sequential", "keras.tensorflow", *RESHAPED_KERNEL)
    result = run_cell(Cell("keras_sequential", "keras.tensorflow", dtype), OPTIONS, impl=impl)
    assert result.status == "fail", result.reason
    assert first_divergence(result) == (0, "loss", None, "forward")


@pytest.mark.parametrize("backend", TF_MODES + KERAS)
def test_wrong_custom_sigmoid_backward_diverges_in_gradients_at_step_0(backend):
    """The hand-written backward is what computes the gradient, in every mode and backend."""
    skip_unless_available(backend)
    impl = mutant("sigmoid_custom_op", backend, WRONG_SIGMOID_BACKWARD)
    result = run(Cell("sigmoid_custom_op", backend, "float32"), impl)
    assert result.status == "fail", result.reason
    assert first_divergence(result) == (0, "grads", "w1", "backward")


def test_the_unpatched_implementations_pass_the_same_short_runs():
    """The mutants fail because of the planted change, not because of the short run."""
    for case, backend in [
        ("two_layer_mlp", "tf.v1graph"),
        ("keras_sequential", "keras.tensorflow"),
        ("sigmoid_custom_op", "tf.xla"),
    ]:
        if get_backend(backend).availability():
            continue
        for dtype in ("float64", "float32"):
            result = run_cell(Cell(case, backend, dtype), OPTIONS)
            assert result.status == "pass", f"{case} {backend} {dtype}: {result.reason}"


#: compiled functions per trainer: resnet18's TF trainer has two, its step and its
#: evaluation-mode forward pass (run after every update), each traced once
FUNCTIONS = {"resnet18": 2}
#: resnet18's traces take a minute or more each (an XLA compile of the whole ResNet)
SLOW_CASES = {"resnet18"}


@pytest.mark.parametrize("backend", ["tf.function", "tf.xla", "tf.v1graph"])
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c
        for c in sorted(builtin_cases())
    ],
)
def test_compiled_tf_steps_are_traced_once_per_run(backend, case):
    skip_unless_available(backend)
    result = run_cell(Cell(case, backend, "float32"), OPTIONS)
    assert result.status == "pass", result.reason
    assert result.traces == FUNCTIONS.get(case, 1)


@pytest.mark.parametrize("backend", ["tf.function", "tf.xla"])
def test_both_branches_share_one_trace(backend):
    """The short runs above never switch branch; force both, several times, on one trainer."""
    skip_unless_available(backend)
    tf_backend = get_backend(backend)
    tf_backend.configure(os.cpu_count() or 1)
    for case in ("dynamic_branching", "static_graph_step"):
        spec = get_case(case)
        module = ImplSource(tf_backend.implementation_module(spec)).load()
        before = tf_backend.traces
        trainer = tf_backend.build_trainer(spec, spec.make_state(0, "float32"), module)
        branches = []
        for prev_loss in (0.0, 1e30, 0.0, 1e30):
            if case == "dynamic_branching":
                trainer.prev_loss = prev_loss
            else:
                trainer.prev_loss.assign(prev_loss)
            trainer.run_step()
            branches.append(trainer.record().branch)
        assert branches == ["w2a", "w2b", "w2a", "w2b"]
        assert tf_backend.traces - before == 1, case


@pytest.mark.parametrize("case", ["two_layer_mlp", "keras_sequential_adam"])
def test_a_tf1_graph_keeps_no_parameter_as_a_constant(case):
    """A ``Session`` copies a graph's constants into each executor it builds: parameters held
    as constants cost a float64 resnet18 port 2 GB. They are fed to the initializers instead
    (each variable starts at its parameter), and the graph's constants together stay smaller
    than its largest parameter."""
    skip_unless_available("tf.v1graph")
    backend = get_backend("tf.v1graph")
    backend.configure(1)
    spec = get_case(case)
    state = spec.make_state(0, "float64")
    module = ImplSource(backend.implementation_module(spec)).load()
    trainer = backend.build_trainer(spec, state, module)
    for name, value in trainer.sess.run(trainer.weights).items():
        np.testing.assert_array_equal(value, state.params[name])
    nodes = trainer.sess.graph.as_graph_def().node
    constants = sum(len(n.attr["value"].tensor.tensor_content) for n in nodes if n.op == "Const")
    assert constants < max(p.nbytes for p in state.params.values())


FRAMEWORKS = ("tensorflow", "keras", "jax", "torch")


def test_importing_and_listing_the_tf_and_keras_backends_imports_no_framework():
    code = (
        "import sys\n"
        "import equiv.backends.tensorflow as t, equiv.backends.keras as k\n"
        "for b in t.backends() + k.backends():\n"
        "    b.describe(); b.versions()\n"
        f"bad = [m for m in {FRAMEWORKS!r} if m in sys.modules]\n"
        "print('IMPORTED', bad); sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_keras_tensorflow_says_why_not_after_keras_was_imported_with_another_backend():
    if get_backend("keras.jax").availability():
        pytest.skip("needs keras on jax")
    code = (
        "import keras\n"
        "from equiv.backends.registry import get_backend\n"
        "print(get_backend('keras.tensorflow').availability())\n"
        "print(get_backend('keras.torch').availability())\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    tf_line, torch_line = out.stdout.strip().splitlines()[-2:]
    assert "'jax'" in tf_line and "own" in tf_line
    assert torch_line == "None"  # it runs in a worker of its own anyway


XLA_BITS = (
    "from equiv.contract.records import Cell\n"
    "from equiv.running.runner import RunOptions, run_cell\n"
    "opts = RunOptions(steps=10, threads=1, bench_rounds=0, check_reproducible=False)\n"
    "r = run_cell(Cell('two_layer_mlp', 'tf.xla', 'float64'), opts)\n"
    "print(r.status, r.digest)  # every quantity of every step\n"
)


def test_tf_xla_float64_bits_do_not_depend_on_whether_xla_flags_were_set_before():
    """With one thread, tf.xla's bits must be those of a process of its own whatever XLA_FLAGS
    it inherits: a pytest-xdist worker where equiv-jax had set --xla_cpu_multi_thread_eigen=false
    first gave two float64 cells other bits (XLA's Eigen pool splits a dot differently)."""
    skip_unless_available("tf.xla")
    digests = []
    for flags in ("", "--xla_cpu_multi_thread_eigen=false"):
        env = {**os.environ, "XLA_FLAGS": flags, "TF_CPP_MIN_LOG_LEVEL": "2"}
        out = subprocess.run(
            [sys.executable, "-c", XLA_BITS], capture_output=True, text=True, env=env
        )
        assert out.returncode == 0, out.stderr[-2000:]
        digests.append(out.stdout.split()[-1])
    assert digests[0] == digests[1]
