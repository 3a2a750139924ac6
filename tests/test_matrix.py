"""The parity matrix: every (case, backend, dtype) cell, at the seed's step counts."""

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
