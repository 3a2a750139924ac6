"""JAX's persistent compilation cache, kept in equiv's cache directory beside the calibrations.

Keras on jax and ``jax.eager`` compile every primitive a step meets on its first call, and each
process of a run (a worker per backend, a test's subprocess) compiled the same ones again: a
Keras-on-jax test that took 33 s with none took 13 s with the executables on disk. torch's
inductor keeps its own cache by default; JAX only when asked, so equiv asks for every process it
starts. The folder is per CPU, as XLA compiles for the host's instruction set, and a user who
configured JAX's cache keeps their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from equiv.running.environment import cpu_features, cpu_name

DIRECTORY_ENV = "JAX_COMPILATION_CACHE_DIR"

#: JAX keeps only compilations slower than 1 s by default; a primitive compiles in milliseconds
#: and there are hundreds of them per case
THRESHOLDS = {
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}

#: a size limit turns on JAX's file lock, without which two processes writing and reading the
#: same entry at once can meet a half-written file (JAX then warns and compiles); the whole
#: matrix's executables take a few MB
MAX_BYTES = 1 << 30
SIZE_ENV = "JAX_COMPILATION_CACHE_MAX_SIZE"


def cpu_folder() -> str:
    """A short name for this CPU: executables compiled on one do not run, or round, the same
    on another."""
    return hashlib.sha256(f"{cpu_name()}|{cpu_features()}".encode()).hexdigest()[:16]


def jax_cache_variables(cache_dir: str | Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables that point JAX's persistent cache at ``cache_dir`` (JAX reads them when
    imported), less those ``environ`` already has: nothing where the user set up their own
    cache, or turned it off."""
    if DIRECTORY_ENV in environ or environ.get("JAX_ENABLE_COMPILATION_CACHE", "").lower() in (
        "0",
        "false",
    ):
        return {}
    wanted = {DIRECTORY_ENV: str(Path(cache_dir) / "jax" / cpu_folder()), **THRESHOLDS}
    if importlib.util.find_spec("filelock") is not None:  # JAX needs it for a size limit
        wanted[SIZE_ENV] = str(MAX_BYTES)
    return {name: value for name, value in wanted.items() if name not in environ}


@contextlib.contextmanager
def jax_compilations_kept_in(cache_dir: str | Path) -> Iterator[Path | None]:
    """JAX's cache in ``cache_dir`` for this process and the processes started inside the
    block; afterwards the variables are as before (a run called in-process, as tests do,
    leaves none behind). Yields the folder, or None where the user's own setting stands."""
    added = jax_cache_variables(cache_dir, os.environ)
    os.environ.update(added)
    try:
        yield Path(added[DIRECTORY_ENV]) if added else None
    finally:
        for name in added:
            os.environ.pop(name, None)
