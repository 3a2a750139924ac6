"""Runs a case's numpy reference step by step, with the same trainer protocol as a framework.

A reference module defines ``forward_backward(params, data, cfg, prev_loss=None,
numerics=EXACT)`` returning (loss, grads, branch): plain maths, which asks ``numerics``
(``equiv.reference.numerics``) for its branch and its ReLU masks only. The update rule comes from
``equiv.reference.optim``. ``data`` is the step's minibatch when the case trains on minibatches
(``equiv.reference.batching``).

A case with non-trainable state (BatchNorm's running statistics) has a reference module that
also defines ``initial_state(cfg)``; its ``forward_backward`` then takes ``state=`` and returns
a fourth value, ``{"activations": ..., "state": ...}`` (the step's activations by layer and the
state after it), and ``evaluate(params, state, data, cfg)`` gives the evaluation-mode outputs
after the update (``StepRecord.evaluation``).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Sequence

import numpy as np

from equiv.contract.case import CaseSpec
from equiv.contract.records import CaseState, StepRecord, TrainingState
from equiv.reference.batching import step_data
from equiv.reference.numerics import EXACT, ForcedBranch, Numerics
from equiv.reference.optim import copied, make_optimizer


class Carrying:
    """What a reference carries from step to step, as a ``TrainingState``: its step ``t``,
    ``params``, ``optimizer`` (an ``equiv.reference.optim`` rule), non-trainable ``state`` (None
    where the case has none) and ``prev_loss``. The numpy reference and a reference port
    (``equiv.backends.reference_port``) both carry it."""

    t: int
    params: dict[str, np.ndarray]
    state: dict | None
    prev_loss: float | None

    def training_state(self, copy: bool = True) -> TrainingState:
        """Where training stands: what a port loads to run the next step as this one would.
        With ``copy`` False the state holds this trainer's own arrays, valid until its next
        step (which updates some in place): resynchronising reads it once, at once, where
        resnet18's copies took a tenth of a float32 cell."""
        return TrainingState(
            step=self.t,
            params={k: copied(v, copy) for k, v in self.params.items()},
            optimizer=self.optimizer.state_dict(copy),
            state={k: copied(v, copy) for k, v in (self.state or {}).items()},
            prev_loss=None if self.prev_loss is None else float(self.prev_loss),
        )

    def load_training_state(self, resume: TrainingState, copy: bool = True) -> None:
        """``resume`` becomes this trainer's state; with ``copy`` False its arrays themselves
        (a state nobody else holds)."""
        self.t = resume.step
        self.params = {k: copied(v, copy) for k, v in resume.params.items()}
        self.optimizer.load_state_dict(resume.optimizer, copy)
        if self.state is not None:
            self.state = {k: copied(v, copy) for k, v in resume.state.items()}
        self.prev_loss = resume.prev_loss

    def round_state(self, dtype: str) -> None:
        """This trainer's state rounded to ``dtype`` (its arrays keep their own dtype): where a
        ``dtype`` port stands once it has loaded the state, which is where resynchronising
        steps the reference from. ``load_training_state`` of the state cast there and back held
        the old state, the rounded one and the new at once (425 MB in resnet18's float32
        cells). The optimizer's arrays, which no record holds, are rounded in place; the
        parameters and the model's state, which records hold, are replaced."""

        def rounded(value: np.ndarray) -> np.ndarray:
            if not np.issubdtype(value.dtype, np.floating):
                return value
            return value.astype(dtype).astype(value.dtype)

        self.params = {k: rounded(v) for k, v in self.params.items()}
        for value in self.optimizer.state_dict(copy=False).values():
            if np.issubdtype(value.dtype, np.floating):
                np.copyto(value, value.astype(dtype))
        if self.state is not None:
            self.state = {k: rounded(v) for k, v in self.state.items()}

    def load_state(self, resume: TrainingState) -> None:
        """As a port, the reference's state at a later step, in place
        (``equiv.contract.trainer``): all of it but the step counter, which is this trainer's
        own data position (its minibatch), as a framework port's iterator is."""
        own_step = self.t
        self.load_training_state(resume)
        self.t = own_step


class ReferenceTrainer(Carrying):
    """For the tolerance calibration (``equiv.tolerance.policy``): ``force_branches`` (per step,
    None = the reference's own), ``numerics`` (the shadow's ReLUs; exact by default) and
    ``perturb_grads``, another rounding of the gradients before the update, as another
    correct implementation would give them."""

    def __init__(
        self,
        spec: CaseSpec,
        state: CaseState,
        module=None,
        force_branches: Sequence[str | None] | None = None,
        numerics: Numerics = EXACT,
        perturb_grads: Callable[[dict], dict] | None = None,
    ):
        self.numerics = numerics
        self.perturb_grads = perturb_grads
        self.module = module or importlib.import_module(spec.module_name("reference"))
        self.data = state.data
        self.params = {k: v.copy() for k, v in state.params.items()}
        self.cfg = state.config
        self.optimizer = make_optimizer(self.cfg)
        self.prev_loss = self.cfg.get("initial_prev_loss")
        self.force_branches = force_branches
        self.t = 0
        self.last: StepRecord | None = None
        #: non-trainable state (BatchNorm's running statistics) for a reference that has it
        init_state = getattr(self.module, "initial_state", None)
        self.state: dict | None = None
        if init_state is not None:
            self.state = {
                k: np.asarray(v, dtype=state.dtype) for k, v in init_state(self.cfg).items()
            }
        #: branching cases keep each step's starting point, for ``redo``
        self.keep_before = spec.branching
        self.before: tuple = ()  # set by run_step
        if state.resume is not None:
            self.load_training_state(state.resume)
        #: ``force_branches`` counts from the step this trainer started at
        self.first = self.t

    def run_step(self, force_branch: str | None = None) -> None:
        """One step; ``force_branch`` overrides the branch decision (``redo``)."""
        self.last = None  # not held through the step: resnet18's is 170 MB in float64
        if self.keep_before:  # what ``redo`` restores (the optimizer's state too: Adam's)
            self.before = (
                self.params,
                self.prev_loss,
                self.t,
                copy.deepcopy(self.optimizer),
                self.state,
            )
        forced = force_branch or (
            self.force_branches[self.t - self.first] if self.force_branches else None
        )
        data = step_data(self.data, self.cfg, self.t)  # the step's minibatch, if any
        numerics = ForcedBranch(forced, self.numerics) if forced else self.numerics
        observed: dict = {}
        if self.state is None:
            loss, grads, branch = self.module.forward_backward(
                self.params, data, self.cfg, self.prev_loss, numerics=numerics
            )
        else:
            loss, grads, branch, observed = self.module.forward_backward(
                self.params, data, self.cfg, self.prev_loss, numerics=numerics, state=self.state
            )
            self.state = observed["state"]
        if self.perturb_grads is not None:
            grads = self.perturb_grads(grads)
        self.params = self.optimizer.step(self.params, grads)
        self.prev_loss = loss
        evaluation = {}
        if self.state is not None and hasattr(self.module, "evaluate"):
            evaluation = self.module.evaluate(self.params, self.state, data, self.cfg)
        self.last = StepRecord(
            loss=loss,
            grads=grads,
            params=self.params,
            branch=branch,
            activations=observed.get("activations", {}),
            state=self.state or {},
            evaluation=evaluation,
        )
        self.t += 1

    def redo(self, branch: str) -> None:
        """Run the last step again from where it started, taking ``branch``: the reference
        follows an implementation through a numerically ambiguous branch decision."""
        self.params, self.prev_loss, self.t, self.optimizer, self.state = self.before
        self.run_step(force_branch=branch)

    def record(self) -> StepRecord:
        assert self.last is not None, "record() before run_step()"
        return self.last
