"""resnet18's training step per backend, with GFLOP/s (pytest-benchmark). Not part of the test
suite: run it with

    .venv/bin/python -m pytest benchmarks/test_resnet18.py -p no:cacheprovider \\
        --benchmark-json bench.json

The FLOPs are the case's own count (``cases.resnet18.spec.resnet18_step_flops``: every
convolution's and the Dense layer's multiply-adds, forward, kernel gradient and input gradient;
869 MFLOP a step at 4 x 3 x 32 x 32). Each benchmark's ``extra_info`` holds ``gflops`` (the
FLOPs over the median step) and ``flops_per_step``. ``equiv run`` reports the same per cell
(``benchmark.gflops`` in parity.json).
"""

from __future__ import annotations

import pytest

from equiv.backends.implementations import ImplSource
from equiv.backends.registry import get_backend
from equiv.contract.case import get_case

BACKENDS = ["numpy", "torch.eager", "tf.function", "keras.torch"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend_id", BACKENDS)
def test_resnet18_step(benchmark, backend_id, dtype):
    backend = get_backend(backend_id)
    reason = backend.availability()
    if reason:
        pytest.skip(reason)
    if backend.needs_own_process:
        pytest.skip(f"{backend_id} runs in a worker process of its own: see equiv run's benchmark")
    backend.configure(1)
    spec = get_case("resnet18")
    module = ImplSource(backend.implementation_module(spec)).load()
    trainer = backend.build_trainer(spec, spec.make_state(0, dtype), module)
    trainer.run_step()  # builds, traces, compiles

    def step():
        trainer.run_step()
        backend.synchronize()

    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    flops = spec.flops_per_step(spec.config)
    benchmark.extra_info["flops_per_step"] = flops
    benchmark.extra_info["gflops"] = flops / benchmark.stats.stats.median / 1e9
