"""Every step compared (issue 15): at a numerically ambiguous branch decision, where the
implementation took the other branch (either is correct there), the reference follows it and
the comparison goes on, with tolerances calibrated for that path by the same policy.

At seed 5 the float32 numpy cell of dynamic_branching took the other branch at step 355 (the
previous loss within tolerance of the threshold) on the AMD machine where this was found; the
comparison used to stop there, so a bug from step 400 on passed unseen. Whether float32
rounding flips a given ambiguous step depends on the CPU's vector instructions (an AVX-512 Xeon
rounds this cell to w2b there), so the tests plant that choice: the implementation takes w2a at
step 355, which every machine's float32 calibration of this seed calls ambiguous (steps 88-419
are) and where the float64 reference takes w2b."""

from __future__ import annotations

from equiv.backends.implementations import ImplSource, Patch
from equiv.contract.records import Cell
from equiv.report.render import render_html
from equiv.results.document import build_document
from equiv.running.runner import RunOptions, run_cell

#: 420 of the case's 500 steps: past the first ambiguous step and the late bug, and each
#: followed step costs a calibration of the run
SEED5 = RunOptions.verdict_only(seed=5, steps=420)
CELL = Cell("dynamic_branching", "numpy", "float32")
#: the step taking w2a: what float32 rounding chose there on the machine that found the bug
FLIPPED_STEP = 355
_COUNT_CALLS = Patch(
    "def forward_backward(params, data, cfg, prev_loss=None, numerics=EXACT):\n",
    "CALLS = [0]\n\n\n"
    "def forward_backward(params, data, cfg, prev_loss=None, numerics=EXACT):\n"
    "    CALLS[0] += 1\n",
)
#: the implementation takes w2a at FLIPPED_STEP (one call a step: call n is step n - 1)
_TAKE_W2A = Patch(
    "branch = numerics.branch(choose_branch(prev_loss, cfg))",
    "branch = numerics.branch(choose_branch(prev_loss, cfg))\n"
    f'    branch = "w2a" if CALLS[0] == {FLIPPED_STEP + 1} else branch',
)
FLIPPED = ImplSource("cases.dynamic_branching.reference", (_COUNT_CALLS, _TAKE_W2A))
#: w1's gradient 10x too large from the 401st step on: wrong only after the first ambiguous
#: step (this cell's float32 tolerances are loose here, so the bug must be a large one)
LATE_BUG = ImplSource(
    "cases.dynamic_branching.reference",
    (
        _COUNT_CALLS,
        _TAKE_W2A,
        Patch(
            'grads = {"w1": grad_w1, "w2a"',
            'grads = {"w1": 10 * grad_w1 if CALLS[0] > 400 else grad_w1, "w2a"',
        ),
    ),
)


def test_an_ambiguous_step_is_followed_and_every_step_compared():
    result = run_cell(CELL, SEED5, impl=FLIPPED)
    assert result.status == "pass", result.reason
    assert result.compared_steps == result.steps == 420 and result.coverage == 1.0
    followed = result.branches["followed"]
    assert followed and followed[0]["step"] == FLIPPED_STEP
    assert result.branches["stopped_at"] is None
    for f in followed:  # the reference took the implementation's branch there
        assert result.branches["reference"][f["step"]] == f["implementation"] != f["reference"]
    assert any("the reference followed it" in w for w in result.warnings)
    html = render_html(build_document([result], {}, {}))
    assert "step 355: w2a (the reference would have taken w2b)" in html


def test_a_bug_after_the_first_ambiguous_step_fails():
    """Before, the comparison stopped at step 355 and this cell passed."""
    result = run_cell(CELL, SEED5, impl=LATE_BUG)
    assert result.status == "fail", result.reason
    div = result.first_divergence
    assert (div.quantity, div.name) == ("grads", "w1") and 400 <= div.step <= 410
