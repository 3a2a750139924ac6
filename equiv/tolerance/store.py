"""Calibrations on disk, computed once and shared by every worker of a run (and later runs).

Why: a calibration (``equiv.tolerance.policy``) costs thousands of reference steps and depends only
on
(case, seed, steps, dtype, variant), never on the backend; without sharing, each backend's
worker process computed the same ones again (13 workers x 12 calibrations in a full run).

An entry is keyed by everything that determines its numbers: the parameters above, the case's
config, the source of the case's spec and reference modules and of the harness modules the
calibration runs, numpy's version and its BLAS (library, version, CPU kernel). A change to any
of them is a different key, so an entry is never stale; it is never edited, only written once,
atomically. Concurrent workers that miss the same entry take a file lock, so it is computed
once while the others wait for it. Entries are ``.npz`` files without pickles; floats round-trip
bit for bit.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import platform
import tempfile
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import numpy as np

from equiv.tolerance.calibration import Calibration

#: the harness modules whose code computes a calibration
HARNESS_MODULES = (
    "equiv.tolerance.policy",
    "equiv.tolerance.calibration",
    "equiv.reference.kinks",
    "equiv.reference.numerics",
    "equiv.reference.layers",
    "equiv.reference.trainer",
    "equiv.reference.batching",
    "equiv.reference.optim",
    "equiv.contract.case",
    "equiv.contract.records",
    "equiv.tolerance.store",
    "equiv.support.draws",
    "equiv.backends.reference_port",
)
FORMAT = 1
#: what a reference port's step runs through besides its own file (the one-call ports, the
#: layouts they load through, the support bases)
PORT_SUPPORT_MODULES = (
    "equiv.support.torch_port",
    "equiv.support.keras_port",
    "equiv.support.torch",
    "equiv.support.keras",
    "equiv.support.tf",
    "equiv.support.records",
    "equiv.layouts.core",
)


def default_directory() -> Path:
    """``$EQUIV_CACHE_DIR``, else ``$XDG_CACHE_HOME/equiv``, else ``~/.cache/equiv``."""
    explicit = os.environ.get("EQUIV_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "equiv"


@cache
def _source_digest(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not os.path.isfile(spec.origin):
        return f"{module}:unavailable"
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()


@cache
def _numeric_platform() -> dict[str, str]:
    """What decides the reference's rounding besides its code: numpy and the BLAS kernels."""
    from threadpoolctl import threadpool_info

    blas = sorted(
        f"{i.get('internal_api')}-{i.get('version')}-{i.get('architecture')}"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    )
    return {"numpy": np.__version__, "machine": platform.machine(), "blas": ";".join(blas)}


def case_modules(spec) -> tuple[str, ...]:
    """The case's spec and reference modules, and the modules their ``draw`` and
    ``forward_backward`` are defined in: a case that re-exports another case's reference (or
    ``replace``s its spec) must get a new calibration when that other file changes."""
    if spec.reference_port is not None:  # the port's code is the reference's
        from equiv.backends.registry import get_backend

        backend = get_backend(spec.reference_port)
        port = backend.implementation_module(spec)
        build = getattr(importlib.import_module(port), "build", None)
        found = (
            spec.module_name("spec"),
            port,
            getattr(build, "__module__", None),  # a port that re-exports another case's
            getattr(spec.draw, "__module__", None),
            type(backend).__module__,
            *PORT_SUPPORT_MODULES,
        )
        return tuple(dict.fromkeys(m for m in found if m))
    reference = importlib.import_module(spec.module_name("reference"))
    found = (
        spec.module_name("spec"),
        spec.module_name("reference"),
        getattr(spec.draw, "__module__", None),
        getattr(getattr(reference, "forward_backward", None), "__module__", None),
    )
    return tuple(dict.fromkeys(m for m in found if m))


@cache
def _port_versions(port: str | None) -> dict[str, str] | None:
    """A reference port's framework versions: its arithmetic is theirs."""
    if port is None:
        return None
    from equiv.backends.registry import get_backend

    return get_backend(port).versions()


def cache_key(spec, seed: int, steps: int, dtype: str, variant: tuple) -> str:
    modules = (*HARNESS_MODULES, *case_modules(spec))
    material = {
        "format": FORMAT,
        "case": spec.name,
        "reference": spec.reference_port,
        "reference_versions": _port_versions(spec.reference_port),
        "config": repr(sorted(spec.config.items())),
        "seed": seed,
        "steps": steps,
        "dtype": dtype,
        "variant": repr(variant),
        "sources": {m: _source_digest(m) for m in modules},
        "platform": _numeric_platform(),
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:32]
    return f"{spec.name}-s{seed}-n{steps}-{dtype}-{digest}"


def _to_arrays(calibration) -> dict[str, np.ndarray]:
    meta = {
        "dtype": calibration.dtype,
        "keys": list(calibration.keys),
        "branches": list(calibration.branches),
        "horizon": calibration.horizon,
    }
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    arrays["losses64"] = calibration.losses64
    for field in ("tol", "scale", "amplification"):
        for key, values in getattr(calibration, field).items():
            arrays[f"{field}/{key}"] = values
    return arrays


def _from_arrays(arrays) -> Calibration:
    meta = json.loads(arrays["meta"].tobytes().decode())
    keys = tuple(meta["keys"])
    return Calibration(
        dtype=meta["dtype"],
        keys=keys,
        tol={k: arrays[f"tol/{k}"] for k in keys},
        scale={k: arrays[f"scale/{k}"] for k in keys},
        amplification={k: arrays[f"amplification/{k}"] for k in keys},
        branches=tuple(meta["branches"]),
        losses64=arrays["losses64"],
        horizon=meta.get("horizon"),
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class CalibrationStore:
    """A folder of calibrations."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)

    def _read(self, path: Path):
        try:
            with np.load(path, allow_pickle=False) as found:
                return _from_arrays({k: found[k] for k in found.files})
        except FileNotFoundError:
            return None

    def get(self, key: str, compute: Callable[[], object]):
        """The stored calibration for ``key``, computing and storing it first if missing."""
        path = self.directory / f"{key}.npz"
        found = self._read(path)
        if found is not None:
            return found
        self.directory.mkdir(parents=True, exist_ok=True)
        with _locked(self.directory / f"{key}.lock"):
            found = self._read(path)  # another process may have written it while we waited
            if found is not None:
                return found
            calibration = compute()
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".npz", dir=self.directory)
            os.close(fd)
            try:
                np.savez(tmp, **_to_arrays(calibration))
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            return calibration
