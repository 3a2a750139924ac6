"""This package's cells in equiv's parity matrix, run by equiv's pytest plugin.

equiv's plugin parametrizes any test that takes ``equiv_cell`` over the cells of this
package's own cases (the ones its entry point registers), narrowed by ``--equiv-case``,
``--equiv-backend`` and ``--equiv-dtype``, and marks each cell ``matrix``. A cell passes, or is
``explained``: it differs from the reference for a declared reason whose reference variant is
proven to match it. A backend without an implementation of the case (``tf.*``,
``torch.manual``, ``keras.fit``) skips.

    pytest --equiv-case transformer_block                # one case, every backend and dtype
    pytest --equiv-case transformer_block --equiv-backend keras.jax
"""

import pytest


def test_parity(equiv_cell, equiv_run_cell):
    result = equiv_run_cell(equiv_cell)
    if result.status == "skip":
        pytest.skip(result.reason)
    assert result.status in ("pass", "explained"), f"{equiv_cell.id}: {result.reason}"
