"""Backend discovery through the ``equiv.backends`` entry-point group (and the entry-point
ordering that case discovery, ``equiv.contract.case``, shares).

Built-in backends are registered in equiv's own ``pyproject.toml`` and found the same way as a
third-party package's. A plugin that fails to load, returns something that is not a complete
adapter, or reuses an id becomes an unavailable backend carrying the reason; it never breaks the
others. equiv's own entry points are loaded first and the rest in a fixed order, so that a clash
never takes a built-in id away: the first registrant keeps the id and the later one is listed as
``<id>@<entry point>``, unavailable, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

from equiv.contract.backend import Backend
from equiv.contract.plugins import ordered_entry_points
from equiv.contract.trainer import HARNESS_CALLS

GROUP = "equiv.backends"
#: everything the harness calls on an adapter (runner, workers, ``equiv list``, outputs); an
#: adapter without one is reported at discovery instead of failing in the middle of a run
REQUIRED_METHODS = HARNESS_CALLS


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


def _guard_availability(backend: Backend, origin: str) -> None:
    """``availability()`` is called by ``equiv list`` and before every cell: a plugin's that
    raises or returns something odd must make its backend unavailable, not end the command."""
    check = backend.availability

    def availability() -> str | None:
        try:
            reason = check()
        except Exception as exc:
            return f"{origin}: availability() raised {exc!r}"
        if reason is None or (isinstance(reason, str) and reason):
            return reason
        return f"{origin}: availability() returned {reason!r}, not None or a reason"

    backend.availability = availability  # type: ignore[method-assign]


def _check_adapter(item: Any) -> str | None:
    """Why ``item`` cannot serve as a backend, or None."""
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(item, m, None))]
    if not isinstance(item, Backend):
        lacks = f" (lacks {', '.join(missing)})" if missing else ""
        return f"{type(item).__name__} is not an equiv.contract.backend.Backend{lacks}"
    if missing:
        return f"adapter {type(item).__name__} lacks {', '.join(missing)}"
    if not isinstance(item.id, str) or not item.id:
        return f"adapter {type(item).__name__} has no id"
    return None


def _load_group(name: str, loader: Callable[[], Any], origin: str = "") -> list[Backend]:
    origin = origin or f"plugin {name!r}"
    try:
        made = loader()
        items = list(made() if callable(made) else made)
    except (Exception, SystemExit) as exc:  # a broken plugin must not break discovery
        return [BrokenBackend(name, f"{origin} failed to load: {exc!r}")]
    out: list[Backend] = []
    for index, item in enumerate(items):
        problem = _check_adapter(item)
        if problem:
            bid = getattr(item, "id", None)
            bid = bid if isinstance(bid, str) and bid else f"{name}[{index}]"
            out.append(BrokenBackend(bid, f"{origin}: {problem}"))
        else:
            _guard_availability(item, origin)
            out.append(item)
    return out


def _builtin_loaders():
    from equiv.backends import numpy as np_backend
    from equiv.backends import torch as torch_backend

    return [("numpy", lambda: np_backend.backends), ("torch", lambda: torch_backend.backends)]


def _loaders() -> list[tuple[str, Callable[[], Any], str]]:
    found = ordered_entry_points(GROUP)
    loaders = [(ep.name, ep.load, origin) for ep, _, origin in found]
    if not any(own for _, own, _ in found):  # a checkout that was never installed
        builtins = [(name, load, f"built-in {name!r}") for name, load in _builtin_loaders()]
        loaders = builtins + loaders
    return loaders


@cache
def all_backends() -> dict[str, Backend]:
    found: dict[str, Backend] = {}
    owner: dict[str, str] = {}
    for name, loader, origin in _loaders():
        for backend in _load_group(name, loader, origin):
            if backend.id not in found:
                found[backend.id] = backend
                owner[backend.id] = origin
                continue
            alias = f"{backend.id}@{name}"
            n = 2
            while alias in found:
                alias, n = f"{backend.id}@{name}#{n}", n + 1
            found[alias] = BrokenBackend(
                alias,
                f"{origin} registers backend id {backend.id!r}, which {owner[backend.id]} "
                "already registered; this one is ignored",
            )
            owner[alias] = origin
    return found


def get_backend(backend_id: str) -> Backend:
    backends = all_backends()
    if backend_id not in backends:
        raise KeyError(f"unknown backend {backend_id!r}; valid backends: {', '.join(backends)}")
    return backends[backend_id]
