"""``equiv selftest``: proof that the harness detects real bugs.

Every mutant of the catalogue runs its cell with the bug planted; it counts as detected only
when the cell fails *and* the first divergence is the expected one. Unavailable backends skip
their mutants (listed, not counted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from equiv.backends.implementations import ImplSource
from equiv.backends.registry import get_backend
from equiv.contract.case import get_case
from equiv.contract.divergence import Divergence
from equiv.contract.records import Cell, CellResult
from equiv.quality.mutants import CATALOGUE, Mutant
from equiv.running.matrix import run_one
from equiv.running.runner import RunOptions


@dataclass
class Outcome:
    mutant: Mutant
    result: CellResult | None
    skipped: str = ""

    @property
    def divergence(self) -> Divergence | None:
        """The bug's divergence: in a cell with a declared difference, where the port leaves
        the variant that reproduces that difference (against the plain reference it differs
        from step 0 by declaration, bug or not)."""
        r = self.result
        if r is None:
            return None
        if r.explanation is not None and r.explanation.variant_divergence is not None:
            return r.explanation.variant_divergence
        return r.first_divergence

    @property
    def detected(self) -> bool:
        r = self.result
        return r is not None and r.status == "fail" and self.mutant.matches(self.divergence)

    def observed(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        r = self.result
        assert r is not None
        if d := self.divergence:
            where = f"step {d.step} {d.quantity}" + (f" {d.name}" if d.name else "")
            against = " (vs variant)" if d is not r.first_divergence else ""
            return f"{r.status} at {where}{against}"
        return f"{r.status}: {r.reason}" if r.reason else r.status


def describe_expected(expected: dict[str, Any]) -> str:
    """ "step 3", "step 0 grads w1": a mutant may name only the step where its bug starts."""
    parts = [f"step {expected['step']}", expected.get("quantity"), expected.get("name")]
    return " ".join(str(p) for p in parts if p)


def run_mutant(mutant: Mutant, seed: int = 0, reference: str | None = None) -> Outcome:
    """``reference``: a backend whose port is the reference (``RunOptions.reference``); it is
    built from the unmodified source, the mutant goes into the port under test only."""
    backend = get_backend(mutant.backend)
    reason = backend.availability()
    if reason:
        return Outcome(mutant, None, skipped=reason)
    spec = get_case(mutant.case)
    module = mutant.module or backend.implementation_module(spec)
    impl = ImplSource(module, mutant.patches)
    # a mutant is detected or not by its verdict: no reproducibility re-run (a second build)
    options = RunOptions.verdict_only(
        seed=seed, steps=mutant.steps, resync=mutant.resync, reference=reference
    )
    return Outcome(mutant, run_one(Cell(mutant.case, mutant.backend, mutant.dtype), options, impl))


def run_selftest(
    mutants: Sequence[Mutant] = CATALOGUE,
    emit: Callable[[str], None] = print,
    reference: str | None = None,
) -> list[Outcome]:
    outcomes = []
    for mutant in mutants:
        outcome = run_mutant(mutant, reference=reference)
        outcomes.append(outcome)
        mark = "skip" if outcome.skipped else ("DETECTED" if outcome.detected else "MISSED")
        emit(
            f"{mark:8s} {mutant.id:34s} {mutant.case}-{mutant.backend}-{mutant.dtype}: "
            f"expected {describe_expected(mutant.expected)}, observed {outcome.observed()}"
        )
    counted = [o for o in outcomes if not o.skipped]
    detected = sum(o.detected for o in counted)
    kinds = len({o.mutant.kind for o in counted})
    emit(
        f"detected {detected}/{len(counted)} ({kinds} bug kinds; "
        f"{len(outcomes) - len(counted)} skipped)"
    )
    return outcomes
