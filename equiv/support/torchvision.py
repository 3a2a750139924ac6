"""torchvision's models for torch case code, also where torchvision's compiled ops do not load.

Case code uses torchvision's own model classes (``resnet18``), not a rewrite of them: a port is
checked against the model people actually train. Those classes are pure Python on ``torch.nn``;
only ``import torchvision``'s package ``__init__`` needs torchvision's C++ operators (it
registers fake kernels for ``torchvision::nms`` and the other detection ops).

Why the fallback: a torchvision wheel built against another torch build (here torchvision
0.28.0's CUDA build next to torch ``2.13.0+cpu``) cannot load its operator library, and its
``__init__`` then fails with "operator torchvision::nms does not exist". ``resnet_module``
first imports torchvision the normal way; a machine with a matching torchvision takes that
path and nothing else happens. Only when that import fails does it put an unexecuted package
module for ``torchvision`` (its real spec and ``__path__``, its ``__init__`` not run) into
``sys.modules`` and import ``torchvision.models.resnet`` from the installed files through it:
the same source, minus the operators, which ResNet never calls. ``stub_reason`` says which
path was taken. The stub stays in ``sys.modules`` for the process (a later ``import
torchvision`` gets it, without the package's top-level names such as ``__version__``).

No torch import at module level: this module is importable without torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

#: why the stub was used (the normal import's error), None while the normal import served
_stub_reason: str | None = None


def resnet_module() -> ModuleType:
    """``torchvision.models.resnet``: normally imported, or through the stub package when
    ``import torchvision`` itself fails (see the module docstring)."""
    try:
        return importlib.import_module("torchvision.models.resnet")
    except (RuntimeError, OSError, ImportError) as error:
        if isinstance(error, ModuleNotFoundError) and error.name == "torchvision":
            raise  # not installed: nothing to fall back on
        _install_stub(error)
        return importlib.import_module("torchvision.models.resnet")


def resnet18(num_classes: int) -> Any:
    """torchvision's ``resnet18(weights=None, num_classes=num_classes)``: its architecture and
    its own initialisation, no download; the caller loads the canonical weights."""
    return resnet_module().resnet18(weights=None, num_classes=num_classes)


def stub_reason() -> str | None:
    """None when torchvision was imported normally; otherwise the normal import's error, the
    reason the stub package serves ``torchvision``."""
    return _stub_reason


def _install_stub(error: BaseException) -> None:
    global _stub_reason
    spec = importlib.util.find_spec("torchvision") if "torchvision" not in sys.modules else None
    if spec is None or spec.submodule_search_locations is None:
        raise error
    # the failed import leaves the submodules it had finished in sys.modules (torchvision's
    # ``extension``, without its operators): the stub's submodules reuse them
    sys.modules["torchvision"] = importlib.util.module_from_spec(spec)
    _stub_reason = f"{type(error).__name__}: {error}"
