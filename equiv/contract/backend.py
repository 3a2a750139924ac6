"""The backend adapter interface.

A backend is one framework in one mode (``torch.jit``). It knows how to make its framework
available, deterministic and equally threaded; how to move canonical numpy arrays in and out;
how to wait for queued work (for fair timing); and how its mode transforms a step function.
Case code lives in ``<case package>/<case>/<impl_file>.py`` and receives the backend in
``build``. What the harness calls, and what case code may call, is ``equiv.contract.trainer``.
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np


class CellSkip(Exception):
    """Raised by an implementation's ``build`` when a cell truly cannot be expressed."""


class Backend(ABC):
    id: str = ""
    framework: str = ""
    mode: str = "eager"
    impl_file: str = ""
    #: modules whose absence makes the backend unavailable
    requires: tuple[str, ...] = ()
    #: environment a worker process must have before the framework is imported
    worker_env: dict[str, str] = {}
    #: modules a worker process of this backend makes unimportable before its first cell: other
    #: frameworks that this framework imports only if they are installed, and never uses for
    #: equiv's cells (the worker sets ``sys.modules[name] = None``, so the import fails fast)
    worker_hides: tuple[str, ...] = ()
    #: True when the backend cannot share a process with the others (Keras on torch or jax)
    needs_own_process: bool = False
    #: True for compiled modes: trace counts are recorded and checked
    compiled: bool = False
    #: documented differences of this framework from the reference, each with the reference
    #: variant that reproduces it (``equiv.contract.case.Explanation``; proven per cell by the
    # runner)
    explanations: tuple = ()
    #: why this backend's float64 cells compute parts in float32 (None: they do not): such a
    #: backend cannot be a reference port (``equiv.backends.reference_port``)
    float64_in_float32: str | None = None
    #: the helpers this family offers case code beyond ``equiv.contract.trainer.CASE_API`` (each a
    #: method with a docstring); a subclass declares only its own, ``declared_helpers`` adds
    #: its bases'. Listed in docs/adding-a-backend.md.
    case_helpers: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.traces = 0

    def availability(self) -> str | None:
        """None when usable here, otherwise the reason (shown as the skip reason)."""
        for name in self.requires:
            if importlib.util.find_spec(name) is None:
                return f"{name} is not installed (pip install 'equiv[{self.framework}]')"
        return None

    def versions(self) -> dict[str, str]:
        from importlib.metadata import PackageNotFoundError, version

        out = {}
        for name in self.requires:
            try:
                out[name] = version(name)
            except PackageNotFoundError:
                mod = importlib.import_module(name)
                out[name] = getattr(mod, "__version__", "unknown")
        return out

    def configure(self, threads: int) -> None:  # noqa: B027 - optional hook
        """Deterministic mode and thread counts; called once per process before any cell."""

    @abstractmethod
    def to_native(self, array: np.ndarray) -> Any: ...

    @abstractmethod
    def to_numpy(self, value: Any) -> np.ndarray: ...

    def release_caches(self) -> None:  # noqa: B027 - most frameworks free a cell with it
        """Drop what the framework keeps for the process's lifetime once a cell is done
        (compiled programs, traces): called after every cell, so a long-lived worker does not
        grow with the cells it ran. A later cell that needs them compiles them again."""

    def synchronize(self) -> None:  # noqa: B027 - CPU frameworks are synchronous by default
        """Wait for queued work, so that a timed step includes all of its computation."""

    def transform(self, fn: Callable) -> Callable:
        """Apply this backend's mode to a step function (identity for eager)."""
        return fn

    def implementation_module(self, spec) -> str:
        """Where this backend's code for a case lives: ``cases/<case>/<impl_file>.py`` for the
        built-ins; a plugin package returns a module of its own."""
        return spec.module_name(self.impl_file)

    def build_trainer(self, spec, state, module):
        """Turn a case's implementation module into a trainer: ``module.build(state, self)``
        (``equiv.contract.trainer.Build``). The harness checks what this returns against
        ``equiv.contract.trainer.Trainer`` (the runner and the kits call ``check_trainer``), so an
        adapter's own ``build_trainer`` is held to it too."""
        build = getattr(module, "build", None)
        if build is None:
            raise CellSkip(f"{module.__name__} defines no build(state, backend)")
        return build(state, self)

    def describe(self) -> dict[str, Any]:
        reason = self.availability()
        return {
            "id": self.id,
            "framework": self.framework,
            "mode": self.mode,
            "available": reason is None,
            "reason": reason or "",
        }
