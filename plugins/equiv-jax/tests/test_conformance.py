"""equiv's conformance kit, run against both JAX modes: the whole adapter contract, and its
per-case checks on four cases against the reference (20 steps each; EQUIV_CONFORMANCE_FULL=1
for the cases' own)."""

from importlib.metadata import PackageNotFoundError, distribution

import pytest
from equiv.testing import BackendConformance

try:
    distribution("equiv-jax")
except PackageNotFoundError:  # a checkout where the plugin was never installed
    pytest.skip(
        "equiv-jax is not installed (pip install -e plugins/equiv-jax)", allow_module_level=True
    )


#: The kit's per-case checks on cases that between them have every feature a case can have
#: (full batch, branches under jit, Adam, minibatches with a partial batch); every case's
#: parity on both modes is equiv's matrix's job in the same test run (README's test command).
#: A plugin of your own leaves ``cases`` out: the kit then checks every case.
KIT_CASES = ("two_layer_mlp", "static_graph_step", "keras_sequential_adam", "minibatch_partial")


class TestJaxEager(BackendConformance):
    backend_id = "jax.eager"
    cases = KIT_CASES


class TestJaxJit(BackendConformance):
    backend_id = "jax.jit"
    cases = KIT_CASES
