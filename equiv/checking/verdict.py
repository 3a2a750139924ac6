"""The verdict of a cell, and the proof of a declared explanation (docs/verdicts.md)."""

from __future__ import annotations

from equiv.checking.compare import Check
from equiv.contract.backend import Backend
from equiv.contract.case import Explanation, combine_explanations
from equiv.contract.divergence import describe
from equiv.contract.records import CellResult, ExplanationProof


def declared_explanation(spec, backend: Backend, dtype: str) -> Explanation | None:
    found = spec.explanations_for(backend.id, dtype) + [
        e for e in backend.explanations if e.applies_to(backend.id, spec.name, dtype)
    ]
    return combine_explanations(found)


def decide(
    result: CellResult,
    checks: list[Check],
    explanation: Explanation | None,
    strict: bool = False,
) -> None:
    """The cell's status and reason from its checks: ``pass`` without a divergence; ``fail``
    with one; ``explained`` when a declared explanation's reference variant matches where the
    reference does not (the proof goes into ``result.explanation``)."""
    main = checks[0].comparison
    if main.first_divergence is None and main.compared == 0:
        # a verdict on nothing: the comparison stopped before its first step (a float32
        # horizon at step 0 with a port that could not be resynchronised there, say)
        result.status = "error"
        result.reason = "no step was compared: " + "; ".join(main.warnings or ["no reason given"])
        return
    if main.first_divergence is None:
        result.status, result.reason = "pass", ""
        if explanation:
            stale = (
                "a difference is declared for this backend but it matches the reference: "
                f"the declaration may be out of date ({explanation.reason})"
            )
            if strict:  # --strict-declarations: the day a framework fixes it is news
                result.status, result.reason = "fail", f"stale declaration: {stale}"
            else:
                result.warnings.append(stale)
        return
    result.status = "fail"
    result.reason = describe(main.first_divergence)
    if not explanation:
        return
    variant = checks[1].comparison
    # The same rule as for ``pass``: no divergence; a comparison that stopped where the branch
    # decision was numerically ambiguous at the variant's precision is not one, and is warned.
    # And the variant must reach the step where the reference diverged: one that stopped
    # before it (resynchronised stepping followed the plain reference past the variant's
    # horizon, say) has not been compared with what it is to explain.
    diverged_at = main.first_divergence.step
    proved = variant.first_divergence is None and variant.compared > diverged_at
    result.warnings += [f"reference variant: {w}" for w in variant.warnings]
    result.explanation = ExplanationProof(
        reason=explanation.reason,
        variant=explanation.variant,
        proved=proved,
        reference_max_ratio=main.max_ratio,
        reference_divergence=main.first_divergence,
        variant_max_ratio=variant.max_ratio,
        variant_max_error=variant.max_error,
        variant_compared=variant.compared,
        variant_divergence=variant.first_divergence,
        variant_stopped_at=variant.stopped_at,
        variant_resynchronised_from=variant.resynced[0] if variant.resynced else None,
    )
    if proved:
        result.status = "explained"
        precision = explanation.variant.get("compute_dtype")
        held_to = f"at {precision} precision " if precision else ""
        stopped = (
            f", up to {variant.stopped_by} at step {variant.stopped_at}"
            if variant.stopped_at is not None
            else ""
        )
        if variant.resynced:
            stopped += f", resynchronised to the variant's state from step {variant.resynced[0]}"
        result.reason = (
            f"{explanation.reason}. Proof: the reference variant {explanation.variant} matches "
            f"{held_to}(max {max(variant.max_ratio.values(), default=0):.2g} of tolerance over "
            f"{variant.compared} steps{stopped}) where the reference does not "
            f"({describe(main.first_divergence)})"
        )
    elif variant.first_divergence is None:
        result.reason += (
            f"; the declared explanation ({explanation.reason}) is not proven: its reference "
            f"variant was compared up to step {variant.compared - 1} only, "
            f"before the divergence at step {diverged_at}"
        )
    else:
        result.reason += (
            f"; the declared explanation ({explanation.reason}) does not account for it: "
            + describe(variant.first_divergence)
        )
