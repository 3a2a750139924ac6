"""Loading a case's implementation module, optionally with planted source changes.

Planted bugs (mutants) are described as data, (module, [(old, new), ...]), so they can be sent
to a worker process and applied there: the module's source is read, each ``old`` must occur
exactly once, and the changed source is executed as a fresh module. The original is untouched.
"""

from __future__ import annotations

import importlib
import importlib.util
import linecache
import sys
import types
from dataclasses import dataclass


@dataclass(frozen=True)
class Patch:
    old: str
    new: str


@dataclass(frozen=True)
class ImplSource:
    """Where a cell's implementation comes from: a module, with optional planted changes."""

    module: str
    patches: tuple[Patch, ...] = ()

    def load(self) -> types.ModuleType:
        if not self.patches:
            return importlib.import_module(self.module)
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(self.module)
        with open(spec.origin, encoding="utf-8") as f:
            source = f.read()
        for patch in self.patches:
            count = source.count(patch.old)
            if count != 1:
                raise ValueError(
                    f"patch target occurs {count} times in {self.module}: {patch.old!r}"
                )
            source = source.replace(patch.old, patch.new)
        name = f"{self.module}__patched_{abs(hash(self.patches)):x}"
        filename = f"<{name}>"
        # TorchScript and friends read a function's source through linecache: register it.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        module = types.ModuleType(name, doc=f"{self.module}, patched")
        module.__file__ = filename
        module.__package__ = self.module.rpartition(".")[0]
        sys.modules[name] = module  # dataclasses, pickling and inspect look modules up here
        exec(compile(source, filename, "exec"), module.__dict__)
        return module


def load_implementation(backend, spec, impl: ImplSource | None = None) -> types.ModuleType:
    """The module of ``backend``'s implementation of ``spec`` (or ``impl``, a patched one);
    a case the backend does not implement is a ``CellSkip``, any other import error raises."""
    from equiv.contract.backend import CellSkip

    source = impl or ImplSource(backend.implementation_module(spec))
    try:
        return source.load()
    except ModuleNotFoundError as exc:
        if exc.name and source.module.startswith(exc.name):
            raise CellSkip(missing_implementation(backend, spec, source.module)) from exc
        raise


def missing_implementation(backend, spec, looked_in: str) -> str:
    """Why a cell skips for want of code, naming the file the case's author would write
    (``<package>/<case>/<impl_file>.py``) rather than only the module the backend looked in:
    a plugin backend may look in a package of its own first."""
    where = looked_in
    if backend.impl_file:
        own = spec.module_name(backend.impl_file)
        where = f"no {own.replace('.', '/')}.py"
        if looked_in != own:
            where += f" (nor {looked_in}, where {backend.id} keeps code of its own)"
    return f"{backend.id} has no implementation of {spec.name}: {where}"
