"""``equiv selftest`` in the suite: every catalogued bug is caught where expected."""

from equiv.implementations import Patch
from equiv.mutants import CATALOGUE, Mutant
from equiv.selftest import run_mutant, run_selftest


def test_every_planted_bug_is_detected_with_the_right_first_divergence():
    lines: list[str] = []
    outcomes = run_selftest(CATALOGUE, emit=lines.append)
    counted = [o for o in outcomes if not o.skipped]
    missed = [line for line in lines if line.startswith("MISSED")]
    assert not missed, "\n".join(missed)
    assert len({o.mutant.kind for o in counted}) >= 12
    assert lines[-1].startswith(f"detected {len(counted)}/{len(counted)}")


def test_a_harmless_change_is_not_counted_as_detected():
    """The selftest itself can fail: a 'mutant' that changes nothing passes its cell."""
    noop = Mutant(
        "noop",
        "no change",
        "two_layer_mlp",
        "torch.eager",
        "float64",
        (Patch("y_pred = x.mm(w1).clamp(min=0).mm(w2)", "y_pred = x.mm(w1).clamp(min=0).mm(w2)"),),
        {"step": 0, "quantity": "loss"},
    )
    outcome = run_mutant(noop)
    assert outcome.skipped or (outcome.result.status == "pass" and not outcome.detected)


def test_a_bug_found_in_the_wrong_place_is_not_counted():
    wrong_place = Mutant(
        "misplaced",
        "zero_grad, but expecting the wrong step",
        "two_layer_mlp",
        "torch.eager",
        "float64",
        CATALOGUE[0].patches,
        {"step": 0, "quantity": "grads"},
    )
    outcome = run_mutant(wrong_place)
    assert outcome.skipped or (outcome.result.status == "fail" and not outcome.detected)
