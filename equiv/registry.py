"""Backend discovery through the ``equiv.backends`` entry-point group.

Built-in backends are registered in equiv's own ``pyproject.toml`` and found the same way as a
third-party package's. A plugin that fails to load, lacks the adapter methods or reuses an id
becomes an unavailable backend carrying the reason; it never breaks the others.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

import numpy as np

from equiv.backends.base import Backend

GROUP = "equiv.backends"
REQUIRED_METHODS = ("to_native", "to_numpy", "build_trainer", "configure", "availability")


class BrokenBackend(Backend):
    """Stands in for a plugin that could not be loaded; always unavailable."""

    def __init__(self, backend_id: str, reason: str):
        super().__init__()
        self.id = backend_id
        self.framework = backend_id.split(".")[0]
        self.reason = reason

    def availability(self) -> str | None:
        return self.reason

    def to_native(self, array: np.ndarray):
        raise RuntimeError(self.reason)

    def to_numpy(self, value) -> np.ndarray:
        raise RuntimeError(self.reason)


def _load_group(name: str, loader) -> list[Backend]:
    try:
        made = loader()
        items = list(made() if callable(made) else made)
    except Exception as exc:  # a broken plugin must not break discovery
        return [BrokenBackend(f"{name}.?", f"plugin {name!r} failed to load: {exc!r}")]
    out: list[Backend] = []
    for item in items:
        missing = [m for m in REQUIRED_METHODS if not callable(getattr(item, m, None))]
        bid = getattr(item, "id", "") or f"{name}.?"
        if missing:
            out.append(BrokenBackend(bid, f"plugin {name!r}: adapter lacks {', '.join(missing)}"))
        else:
            out.append(item)
    return out


def _builtin_loaders():
    from equiv.backends import numpy as np_backend
    from equiv.backends import torch as torch_backend

    return [("numpy", lambda: np_backend.backends), ("torch", lambda: torch_backend.backends)]


@cache
def all_backends() -> dict[str, Backend]:
    loaders = [(ep.name, ep.load) for ep in entry_points(group=GROUP)]
    if not loaders:  # running from a checkout that was never installed
        loaders = _builtin_loaders()
    found: dict[str, Backend] = {}
    for name, loader in loaders:
        for backend in _load_group(name, loader):
            if backend.id in found:
                found[backend.id] = BrokenBackend(
                    backend.id, f"backend id {backend.id!r} is registered twice (plugin {name!r})"
                )
            else:
                found[backend.id] = backend
    return found


def get_backend(backend_id: str) -> Backend:
    backends = all_backends()
    if backend_id not in backends:
        raise KeyError(f"unknown backend {backend_id!r}; valid backends: {', '.join(backends)}")
    return backends[backend_id]
