"""A transposed kernel copied contiguous: numpy's copy against ``equiv.layouts.transposition``'s
two passes (pytest-benchmark; not part of the test suite). The kernel is resnet18's largest,
layer4's 512x512x3x3, held channels-last (HWIO) and read canonical (OIHW), as every
channels-last port's record and ``load_state`` do at every step.

    .venv/bin/python -m pytest benchmarks/test_transposition.py -p no:cacheprovider
"""

from __future__ import annotations

import numpy as np
import pytest

from equiv.layouts.transposition import contiguous

HWIO = np.random.default_rng(0).standard_normal((3, 3, 512, 512)).astype(np.float32)


@pytest.mark.parametrize("copy", [np.ascontiguousarray, contiguous], ids=["numpy", "two-pass"])
def test_kernel_to_canonical(benchmark, copy):
    view = HWIO.transpose(3, 2, 0, 1)
    out = benchmark(copy, view)
    assert out.flags.c_contiguous and np.array_equal(out, view)
