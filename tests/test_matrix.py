"""The parity matrix: every (case, backend, dtype) cell, at the seed's step counts.

A cell passes, or is ``explained``: it differs from the reference for a declared, documented
reason, and the declared reference variant is proven to match it (docs/verdicts.md). Nothing
is marked as an expected failure.
"""

import pytest

from equiv.runner import describe_divergence

pytestmark = pytest.mark.matrix


def test_parity(equiv_cell, equiv_run_cell, benchmark):
    result = equiv_run_cell(equiv_cell)
    if result.status == "skip":
        pytest.skip(result.reason)
    for warning in result.warnings:
        print("warning:", warning)
    assert result.status in ("pass", "explained"), (
        f"{equiv_cell.id}: {result.status}: {result.reason}"
        + (f"\n{result.traceback}" if result.traceback else "")
        + (f"\n{describe_divergence(result.first_divergence)}" if result.first_divergence else "")
    )
    assert result.compared_steps > 0
    if result.status == "explained":
        assert result.extra["explanation"]["proved"]
