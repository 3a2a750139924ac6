"""What the plugin's ports share besides their step: ``load_state``, the reference's training
state put into a running port (``equiv.contract.trainer.OPTIONAL_TRAINER_METHODS``).

JAX arrays are immutable, so "in place" means that the trainer's arrays are replaced, not the
trainer: the port keeps its jitted step (and JAX its trace cache), its data position, its own
counters. Every new array has the shape and dtype of the one it replaces
(``equiv_jax.optim.replace_arrays``), so a ``jax.jit`` step takes it without a retrace.
"""

from __future__ import annotations

from typing import Any

from equiv.contract.records import TrainingState
from equiv.contract.trainer import StateNotLoadable

from equiv_jax.optim import replace_arrays


class Trainer:
    """A base for a port that keeps its parameters in ``self.params`` (canonical name -> JAX
    array) and its backend in ``self.backend``; where it has them, an ``equiv_jax.optim``
    optimizer in ``self.optimizer`` with its state in the attribute ``optimizer_state`` names,
    and the model's non-trainable state (name -> array) in the attribute ``model_state``
    names. A port whose step depends on the previous loss overrides ``loaded_prev_loss``."""

    backend: Any
    params: dict[str, Any]
    optimizer: Any = None
    #: the attribute that holds the optimizer's state (the pytree its ``update`` takes)
    optimizer_state: str = "opt_state"
    #: the attribute that holds the model's non-trainable state (name -> array), if any
    model_state: str | None = None

    def load_state(self, resume: TrainingState) -> None:
        """The reference's parameters, optimizer state (with Adam's host-side step count),
        the model's non-trainable state and, where the step depends on it, the previous loss,
        into the running port. Everything is converted and checked first: where a part
        cannot be loaded (``StateNotLoadable``, naming it) the port is left as it was."""
        native = self.backend.to_native
        loaded = {"params": replace_arrays(self.params, resume.params, native, "parameter")}
        if self.model_state is not None:
            current = getattr(self, self.model_state)
            loaded[self.model_state] = replace_arrays(current, resume.state, native, "state")
        elif resume.state:
            raise StateNotLoadable(
                f"{type(self).__name__} keeps no non-trainable state "
                f"({', '.join(sorted(resume.state)[:5])})"
            )
        loaded.update(self.loaded_prev_loss(resume.prev_loss))
        if self.optimizer is not None:  # last: it sets the optimizer's host-side step count
            current = getattr(self, self.optimizer_state)
            loaded[self.optimizer_state] = self.optimizer.load(resume.optimizer, current, native)
        elif resume.optimizer:
            raise StateNotLoadable(
                f"{type(self).__name__} keeps no optimizer state "
                f"({', '.join(sorted(resume.optimizer)[:5])})"
            )
        for name, value in loaded.items():
            setattr(self, name, value)

    def loaded_prev_loss(self, prev_loss: float | None) -> dict[str, Any]:
        """The attributes that carry the previous loss, from the state's (None: before the
        first step); none here, for a step that does not depend on it."""
        return {}
