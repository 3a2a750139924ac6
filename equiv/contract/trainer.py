"""The contract between the harness, backend adapters and case code, stated once.

Three parties meet here:

- **case code** (``<package>/<case>/<impl_file>.py``) defines ``build(state, backend)``
  (``Build``) returning a ``Trainer``: ``run_step()`` runs one training step, ``record()``
  returns what that step produced as a ``StepRecord`` (the loss before the update, each
  parameter's gradient, each parameter after it, in the canonical layout);
- **the harness** calls the methods in ``HARNESS_CALLS`` on every adapter; the registry
  refuses an adapter that lacks one (``equiv.backends.registry.REQUIRED_METHODS`` is this tuple);
- **case code** may call ``CASE_API`` on every backend, and the helpers a backend family
  declares in its class attribute ``case_helpers`` (torch's ``linear_weight``, JAX's
  ``track``, ...) on that family's backends; ``declared_helpers`` collects them.

``docs/adding-a-backend.md`` lists exactly these names (``tests/test_plugins.py`` holds it to
that), and the conformance kits (``equiv.quality.conformance``) check trainers against ``Trainer``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from equiv.contract.records import CaseState, StepRecord

if TYPE_CHECKING:
    from equiv.contract.backend import Backend


@runtime_checkable
class Trainer(Protocol):
    """What ``build(state, backend)`` returns: one case, one backend, stepped by the harness."""

    def run_step(self) -> None:
        """One training step: forward, backward and the optimizer's update."""

    def record(self) -> StepRecord:
        """The last step's loss (before the update), gradients and updated parameters, as
        numpy arrays of the cell's dtype under ``spec.param_names``, shaped canonically."""


#: the signature of an implementation module's ``build``
Build = Callable[[CaseState, "Backend"], Trainer]

#: what the harness (runner, workers, ``equiv list``, outputs) calls on every adapter
HARNESS_CALLS: tuple[str, ...] = (
    "availability",
    "configure",
    "to_native",
    "to_numpy",
    "synchronize",
    "release_caches",
    "transform",
    "implementation_module",
    "build_trainer",
    "describe",
    "versions",
)

#: what case code may call on any backend; family helpers come on top (``declared_helpers``)
CASE_API: tuple[str, ...] = ("to_native", "to_numpy", "transform")

TRAINER_METHODS: tuple[str, ...] = ("run_step", "record")

#: what a trainer may offer besides: ``load_state(resume: TrainingState)`` puts the
#: reference's state at a later step (parameters, optimizer state, the model's non-trainable
#: state) into the running port, without rebuilding it, so that its next ``run_step`` starts
#: where the reference stands (teacher forcing keeps what the port does not report: its
#: gradient buffers, compiled functions, step counters). A trainer that cannot load part of
#: the state raises ``StateNotLoadable`` saying which. The support bases implement it.
OPTIONAL_TRAINER_METHODS: tuple[str, ...] = ("load_state",)


class StateNotLoadable(Exception):
    """``load_state`` cannot put this state into the port (the reason says which part)."""


class NotATrainer(TypeError):
    """``build`` returned something the harness cannot step."""


def declared_helpers(backend: type | object) -> tuple[str, ...]:
    """Every helper a backend (class or instance) offers case code beyond ``CASE_API``: the
    ``case_helpers`` of its class and of each base class, base classes first."""
    cls = backend if isinstance(backend, type) else type(backend)
    out: list[str] = []
    for klass in reversed(cls.__mro__):
        for name in vars(klass).get("case_helpers", ()):
            if name not in out:
                out.append(name)
    return tuple(out)


def check_trainer(trainer: object, where: str) -> Trainer:
    """``trainer`` itself if it has the ``Trainer`` methods; otherwise ``NotATrainer`` naming
    ``where`` (the implementation module), so that a wrong ``build`` is found at once."""
    missing = [m for m in TRAINER_METHODS if not callable(getattr(trainer, m, None))]
    if missing:
        raise NotATrainer(
            f"{where}.build(state, backend) returned {type(trainer).__name__} {_short(trainer)},"
            f" not a trainer: it lacks {', '.join(missing)} (equiv.contract.trainer.Trainer: "
            "run_step() runs one step, record() returns its StepRecord)"
        )
    return trainer  # type: ignore[return-value]


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
