"""``equiv selftest`` in the suite: every catalogued bug is caught where expected."""

import pytest

from equiv.backends.implementations import Patch
from equiv.quality.mutants import CATALOGUE, RESNET18, RESNET18_LATE, Mutant
from equiv.quality.selftest import run_mutant, run_selftest

#: resnet18's mutants take a minute or two each (a Keras ResNet on TensorFlow in float64, its
#: calibration): one runs here, all four under pytest -m slow (and in ``equiv selftest``)
RESNET18_IN_CI = "keras-resnet-bn-default-eps"
#: (and resnet18's late bugs run in tests/test_resync.py)
FAST = [
    m for m in CATALOGUE if (m not in RESNET18 or m.id == RESNET18_IN_CI) and m not in RESNET18_LATE
]


def test_every_planted_bug_is_detected_with_the_right_first_divergence():
    lines: list[str] = []
    outcomes = run_selftest(FAST, emit=lines.append)
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


@pytest.mark.slow
@pytest.mark.parametrize("mutant", RESNET18, ids=[m.id for m in RESNET18])
def test_resnet18s_ported_defaults_are_found_at_their_layer(mutant):
    outcome = run_mutant(mutant)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    assert outcome.detected, outcome.observed()


@pytest.mark.slow
def test_an_nchw_flatten_before_resnet18s_dense_is_no_bug_here():
    """A port's classic "NCHW flatten fed to an NHWC Dense" cannot be a bug in ResNet-18:
    its Dense reads a global average pool (and at 32 x 32 layer4 is 1 x 1 already), so the
    two flatten orders give the same vector. The port written that way (Permute to channels
    first, then Flatten) is reported as passing, which is right; the mutant that does matter
    for this model's Dense, its weight loaded without the transpose, is a shape error."""
    equivalent = Mutant(
        "keras-resnet-nchw-flatten",
        "NCHW flatten before the Dense (equivalent here)",
        "resnet18",
        "keras.tensorflow",
        "float64",
        (
            Patch(
                '    x = layers.GlobalAveragePooling2D(name="avgpool", dtype=dtype)(x)\n',
                "    x = layers.Permute((3, 1, 2), dtype=dtype)(x)\n"
                '    x = layers.Flatten(name="avgpool", dtype=dtype)(x)\n',
            ),
        ),
        {"step": 0, "quantity": "activations"},
        steps=2,
    )
    outcome = run_mutant(equivalent)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    assert outcome.result.status == "explained", outcome.observed()
    assert not outcome.detected


def test_a_late_mutant_is_described_by_its_step_alone():
    """Late mutants expect only the step their bug starts at (any quantity may show it)."""
    from equiv.quality.selftest import describe_expected

    assert describe_expected({"step": 3}) == "step 3"
    assert describe_expected({"step": 0, "quantity": "grads", "name": "w1"}) == "step 0 grads w1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mutant", "no-such-mutant"], "unknown mutant no-such-mutant; see --list"),
        (["--reference", "no.such.backend"], "no.such.backend"),
    ],
)
def test_bad_selftest_input_is_one_line_on_stderr_and_exit_2(capsys, argv, message):
    from equiv.cli.main import main

    assert main(["selftest", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("equiv selftest: error: ") and message in err
