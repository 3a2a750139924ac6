"""JAX's compilations are kept in equiv's cache directory and read back by later processes,
with the same bits (equiv.running.compile_cache)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import equiv.running.compile_cache
from equiv.backends.registry import get_backend
from equiv.running.compile_cache import (
    DIRECTORY_ENV,
    cpu_folder,
    jax_cache_variables,
    jax_compilations_kept_in,
)

needs_jax = pytest.mark.skipif(
    get_backend("jax.eager").availability() is not None, reason="needs jax (equiv-jax)"
)

#: a process that computes a float64 matmul chain eagerly and reports its bits and how many of
#: its executables came from the persistent cache
SCRIPT = r"""
import json
import jax
import jax.numpy as jnp
import numpy as np

hits = []
jax.monitoring.register_event_listener(
    lambda event, **kw: hits.append(1) if event == "/jax/compilation_cache/cache_hits" else None
)
x = jnp.asarray(np.random.default_rng(0).normal(size=(7, 5)))
y = jnp.tanh(x @ x.T) * 3.0 + jnp.sum(x)
print("REPORT", json.dumps({"bits": np.asarray(y).tobytes().hex(), "hits": len(hits)}))
"""


def test_the_folder_is_per_cpu_and_jax_keeps_even_its_fastest_compilations(tmp_path, monkeypatch):
    env = jax_cache_variables(tmp_path, {})
    assert env[DIRECTORY_ENV] == str(tmp_path / "jax" / cpu_folder())
    assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    assert env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] == "0"
    # another CPU's vector instructions: another folder
    monkeypatch.setattr(equiv.running.compile_cache, "cpu_features", lambda: "avx avx2 sse")
    assert jax_cache_variables(tmp_path, {})[DIRECTORY_ENV] != env[DIRECTORY_ENV]


@pytest.mark.parametrize(
    "users", [{DIRECTORY_ENV: "/theirs"}, {"JAX_ENABLE_COMPILATION_CACHE": "false"}]
)
def test_a_users_own_jax_cache_setting_is_kept(tmp_path, users):
    assert jax_cache_variables(tmp_path, users) == {}


def test_the_variables_are_as_before_after_the_block(tmp_path, monkeypatch):
    monkeypatch.delenv(DIRECTORY_ENV, raising=False)
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "2")
    with jax_compilations_kept_in(tmp_path) as folder:
        assert os.environ[DIRECTORY_ENV] == str(folder)
        assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "2"  # the user's
    assert DIRECTORY_ENV not in os.environ
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "2"


def _jax_process(env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("REPORT ")]
    return json.loads(line.removeprefix("REPORT "))


@needs_jax
def test_a_second_process_reads_the_first_ones_executables_and_gets_the_same_bits(tmp_path):
    plain = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    plain["JAX_ENABLE_X64"] = "1"
    uncached = _jax_process(plain)
    shared = {**plain, **jax_cache_variables(tmp_path, plain)}
    first, second = _jax_process(shared), _jax_process(shared)
    assert uncached["hits"] == first["hits"] == 0  # nothing kept yet: the test can see a miss
    assert second["hits"] > 0
    assert second["bits"] == first["bits"] == uncached["bits"]


@needs_jax
def test_equiv_run_keeps_jax_compilations_in_its_cache_dir(tmp_path):
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != DIRECTORY_ENV}
    out = subprocess.run(
        [sys.executable, "-m", "equiv", "run", "--case", "two_layer_mlp", "--backend"]
        + ["jax.jit", "--dtype", "float64", "--steps", "2", "--bench-rounds", "0"]
        + ["--cache-dir", str(cache), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    kept = list((cache / "jax" / cpu_folder()).glob("*-cache"))
    assert kept, f"no executable in {cache / 'jax'}: {sorted(p.name for p in cache.rglob('*'))}"
