"""Keras on jax, eager: each primitive is compiled once, and then a step compiles nothing.

A step that compiles anew every time makes a cell many times slower and its timings
meaningless: ``ops.cond`` differentiated op by op did it (two XLA compilations per step,
~0.1 s, in static_graph_step) until its loss was staged once (``value_and_grad_fn``,
equiv/backends/keras.py). Keras on jax needs a process of its own, so the checks run in one
subprocess and report back as JSON.
"""

import functools
import json
import os
import subprocess
import sys

import pytest

from equiv.backends.registry import get_backend
from equiv.contract.case import builtin_cases, get_case

SCRIPT = r"""
import json
import sys
import numpy as np
import jax
import keras
from equiv.contract.case import builtin_cases, get_case
from equiv.backends.implementations import ImplSource
from equiv.backends.registry import get_backend

backend = get_backend("keras.jax")
backend.configure(1)
compiles = []


def listener(event, duration_secs, **kwargs):
    # the event times jax's compile_or_get_cached: an executable read from the persistent
    # cache (equiv.running.compile_cache) counts as a compilation too, so a warm cache hides nothing
    if event == "/jax/core/compile/backend_compile_duration":
        compiles.append(duration_secs)


jax.monitoring.register_event_duration_secs_listener(listener)


def build(case, dtype):
    spec = get_case(case)
    module = ImplSource(backend.implementation_module(spec)).load()
    return backend.build_trainer(spec, spec.make_state(0, dtype), module)


def steps(trainer, n):
    # both branches in turn where the case has two (the previous loss picks the branch)
    for i in range(n):
        prev = (0.0, 1e30)[i % 2]
        if isinstance(getattr(trainer, "prev_loss", None), keras.Variable):
            trainer.prev_loss.assign(prev)
        elif hasattr(trainer, "prev_loss"):
            trainer.prev_loss = prev
        trainer.run_step()
        trainer.record()


report = {"compiles_after_warmup": {}, "staged_equals_plain": {}}
for case in sys.argv[1].split(","):
    trainer = build(case, "float64")
    steps(trainer, 2)
    before = len(compiles)
    steps(trainer, 4)
    report["compiles_after_warmup"][case] = len(compiles) - before
if sys.argv[2] != "staging":
    print("REPORT", json.dumps(report))
    sys.exit(0)

as_bytes = lambda value: np.asarray(value).tobytes()
for dtype in ("float64", "float32"):
    trainer = build("static_graph_step", dtype)
    for prev in (0.0, 1e30):
        trainer.prev_loss.assign(prev)
        staged = trainer.value_and_grad()
        plain = backend.value_and_grad(trainer.compute_loss, trainer.variables)
        same = as_bytes(staged[0]) == as_bytes(plain[0]) and all(
            as_bytes(a) == as_bytes(b) for a, b in zip(staged[1], plain[1], strict=True)
        )
        report["staged_equals_plain"][f"{dtype} prev_loss={prev}"] = same

read, unread = keras.Variable(2.0), keras.Variable(3.0)
try:
    backend.value_and_grad_fn(lambda: read * unread, [read])()
    report["unmapped_read"] = "no error"
except ValueError as exc:
    report["unmapped_read"] = str(exc)
print("REPORT", json.dumps(report))
"""


#: resnet18 marks Keras on jax slow: its check alone takes 35 s, twice the other cases' together
SLOW = [c for c in sorted(builtin_cases()) if get_case(c).slow_on("keras.jax")]
FAST = [c for c in sorted(builtin_cases()) if c not in SLOW]


@functools.cache
def _report(cases: tuple[str, ...], staging: bool) -> dict:
    """The subprocess's report on ``cases`` (and the staging checks when asked), once per
    argument tuple: call it with positional arguments only, as functools.cache keys on them."""
    backend = get_backend("keras.jax")
    if reason := backend.availability():
        pytest.skip(reason)
    env = {**os.environ, **backend.worker_env}
    args = [sys.executable, "-c", SCRIPT, ",".join(cases), "staging" if staging else "-"]
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("REPORT ")]
    return json.loads(line.removeprefix("REPORT "))


@pytest.fixture(scope="module")
def jax_report():
    return _report(tuple(FAST), True)


@pytest.mark.parametrize("case", FAST + [pytest.param(c, marks=pytest.mark.slow) for c in SLOW])
def test_keras_jax_steps_stop_compiling_after_the_first(case):
    report = _report(tuple(SLOW), False) if case in SLOW else _report(tuple(FAST), True)
    compiles = report["compiles_after_warmup"][case]
    assert compiles == 0, f"{case}: {compiles} compilations in 4 eager steps after the first 2"


def test_the_staged_loss_gives_the_bits_of_the_plain_one(jax_report):
    """Staging (``jax.checkpoint``) changes when the loss is traced, not what it computes:
    loss and gradients are bitwise those of ``value_and_grad``, in both branches."""
    assert jax_report["staged_equals_plain"] == {
        f"{dtype} prev_loss={prev}": True
        for dtype in ("float64", "float32")
        for prev in (0.0, 1e30)
    }


def test_a_staged_loss_may_not_read_a_variable_it_was_not_given(jax_report):
    """Its value would be frozen into the trace, and every later step would use it."""
    assert "neither differentiated nor in its state" in jax_report["unmapped_read"]
