"""Planted porting mistakes for diagnosis: each a realistic one-line mistake in a port, and the
catalogue entries (``equiv.catalogue``) its diagnosis must name, or none for a mistake the
catalogue does not hold (then "not found" or "partly", never a wrong cause).

The planted-bug kit of ``equiv.quality.mutants`` asks where a bug is seen; this one asks why.
A case package plants its own with ``PortingMistake`` and ``diagnose_mistake``.
"""

from __future__ import annotations

from dataclasses import dataclass

from equiv.backends.implementations import ImplSource, Patch
from equiv.backends.registry import get_backend
from equiv.contract.case import get_case
from equiv.contract.records import Cell, CellResult


@dataclass(frozen=True)
class PortingMistake:
    id: str
    case: str
    backend: str
    dtype: str
    patches: tuple[Patch, ...]
    #: the entries the diagnosis must find, exactly; () for a mistake outside the catalogue
    expected: tuple[str, ...]
    steps: int | None = None
    #: the module to patch when the case re-uses another case's implementation file
    module: str | None = None
    note: str = ""

    def judged(self, result: CellResult) -> str | None:
        """Why ``result`` is not the diagnosis this mistake must get, or None."""
        found = result.diagnosis
        if result.status != "fail" or found is None:
            return f"the cell is {result.status}, not diagnosed: {result.reason[:200]}"
        ids = tuple(m["id"] for m in found["members"])
        if self.expected:
            if found["outcome"] != "found" or sorted(ids) != sorted(self.expected):
                return f"expected found {list(self.expected)}, got {found['outcome']} {list(ids)}"
            return None
        if found["outcome"] == "found":
            return f"a mistake outside the catalogue was 'found' as {list(ids)}"
        return None


def _p(old: str, new: str) -> tuple[Patch, ...]:
    return (Patch(old, new),)


def diagnose_mistake(mistake: PortingMistake, seed: int = 0, reference: str | None = None):
    """The cell with the mistake planted, run with diagnosis on; a CellResult, or a skip
    reason for a backend not installed."""
    backend = get_backend(mistake.backend)
    module = mistake.module or backend.implementation_module(get_case(mistake.case))
    return run_diagnosed(
        Cell(mistake.case, mistake.backend, mistake.dtype),
        ImplSource(module, mistake.patches),
        seed=seed,
        steps=mistake.steps,
        reference=reference,
    )


def run_diagnosed(cell: Cell, impl: ImplSource | None = None, **options) -> CellResult | str:
    """One cell with diagnosis on and no benchmark (``options``: ``RunOptions``'s), in a
    process of its own where the backend needs one; a skip reason for a backend that is not
    installed."""
    from equiv.running.matrix import run_one
    from equiv.running.runner import RunOptions

    backend = get_backend(cell.backend)
    if reason := backend.availability():
        return reason
    if impl is None:
        impl = ImplSource(backend.implementation_module(get_case(cell.case)))
    return run_one(cell, RunOptions.verdict_only(diagnose=True, **options), impl)


#: equiv's own cases' planted porting mistakes (the example package plants the transformer's)
MISTAKES = (
    PortingMistake(
        "torch-adam-keras-epsilon",
        "keras_sequential_adam",
        "torch.eager",
        "float32",
        _p('eps=cfg.get("epsilon", 1e-8)', "eps=1e-7"),
        ("keras.adam_epsilon",),
        steps=20,
        module="cases.keras_sequential.torch_impl",
        note="Keras's Adam epsilon copied into a torch port",
    ),
    PortingMistake(
        "torch-mse-summed",
        "keras_sequential",
        "torch.eager",
        "float64",
        _p("loss=F.mse_loss,", "loss=lambda p, y: F.mse_loss(p, y, reduction='sum'),"),
        ("loss_reduction_sum",),
        steps=5,
        note="the loss summed where the original takes the mean",
    ),
    PortingMistake(
        "keras-resnet18-bn-eps",
        "resnet18",
        "keras.tensorflow",
        "float32",
        _p("momentum=0.9, epsilon=1e-5, name", "momentum=0.9, name"),
        ("keras.batch_norm_eps",),
        steps=3,
        note="Keras's BatchNormalization epsilon left at its default 1e-3",
    ),
    PortingMistake(
        "keras-resnet18-bn-momentum-torch-convention",
        "resnet18",
        "keras.tensorflow",
        "float32",
        _p("momentum=0.9, epsilon=1e-5, name", "momentum=0.1, epsilon=1e-5, name"),
        ("batch_norm_momentum_convention",),
        steps=3,
        note="torch's BatchNorm momentum 0.1 copied into Keras's, whose momentum is 1 - torch's",
    ),
)
