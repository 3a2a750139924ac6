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
from collections.abc import Iterator, MutableMapping
from pathlib import Path

from equiv.environment import cpu_features, cpu_name

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


def share_jax_compilations(
    cache_dir: str | Path, environ: MutableMapping[str, str] | None = None
) -> Path | None:
    """Point JAX's persistent cache at ``cache_dir`` for this process and every process it
    starts (JAX reads these variables when imported). None where the user set it up, or
    turned it off, themselves."""
    environ = os.environ if environ is None else environ
    if DIRECTORY_ENV in environ or environ.get("JAX_ENABLE_COMPILATION_CACHE", "").lower() in (
        "0",
        "false",
    ):
        return None
    folder = Path(cache_dir) / "jax" / cpu_folder()
    environ[DIRECTORY_ENV] = str(folder)
    for name, value in THRESHOLDS.items():
        environ.setdefault(name, value)
    if importlib.util.find_spec("filelock") is not None:  # JAX needs it for a size limit
        environ.setdefault(SIZE_ENV, str(MAX_BYTES))
    return folder


@contextlib.contextmanager
def jax_compilations_kept_in(cache_dir: str | Path) -> Iterator[Path | None]:
    """``share_jax_compilations`` for the processes started inside the block; the variables
    are as before afterwards (a run called in-process, as tests do, leaves none behind)."""
    names = (DIRECTORY_ENV, SIZE_ENV, *THRESHOLDS)
    before = {name: os.environ.get(name) for name in names}
    try:
        yield share_jax_compilations(cache_dir)
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
