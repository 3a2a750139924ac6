"""Runs a case's numpy reference step by step, with the same trainer protocol as a framework.

A reference module defines ``forward_backward(params, data, cfg, prev_loss, force_branch)``
returning (loss, grads, branch); the update rule comes from ``equiv.optim``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from equiv.case import CaseSpec
from equiv.kinks import Flip
from equiv.optim import make_optimizer
from equiv.records import CaseState, StepRecord


class ReferenceTrainer:
    def __init__(
        self,
        spec: CaseSpec,
        state: CaseState,
        module=None,
        force_branches: Sequence[str | None] | None = None,
        flip: Flip | None = None,
    ):
        self.flip = flip
        self.module = module or importlib.import_module(spec.module_name("reference"))
        self.data = state.data
        self.params = {k: v.copy() for k, v in state.params.items()}
        self.cfg = state.config
        self.optimizer = make_optimizer(self.cfg)
        self.prev_loss = self.cfg.get("initial_prev_loss")
        self.force_branches = force_branches
        self.t = 0
        self.last: StepRecord | None = None

    def run_step(self) -> None:
        forced = self.force_branches[self.t] if self.force_branches else None
        loss, grads, branch = self.module.forward_backward(
            self.params, self.data, self.cfg, self.prev_loss, forced, self.flip
        )
        self.params = self.optimizer.step(self.params, grads)
        self.prev_loss = loss
        self.last = StepRecord(loss=loss, grads=grads, params=self.params, branch=branch)
        self.t += 1

    def record(self) -> StepRecord:
        assert self.last is not None, "record() before run_step()"
        return self.last
