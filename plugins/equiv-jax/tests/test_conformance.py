"""equiv's conformance kit, run against both JAX modes: the whole adapter contract and every
case against the reference (20 steps each; EQUIV_CONFORMANCE_FULL=1 for the cases' own)."""

from importlib.metadata import PackageNotFoundError, distribution

import pytest
from equiv.testing import BackendConformance

try:
    distribution("equiv-jax")
except PackageNotFoundError:  # a checkout where the plugin was never installed
    pytest.skip(
        "equiv-jax is not installed (pip install -e plugins/equiv-jax)", allow_module_level=True
    )


class TestJaxEager(BackendConformance):
    backend_id = "jax.eager"


class TestJaxJit(BackendConformance):
    backend_id = "jax.jit"
