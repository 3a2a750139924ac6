"""A C-contiguous copy of a transposed view, fast.

A port that holds a kernel channels-last (HWIO) reports it canonical (OIHW) through
``np.transpose``: a view whose innermost axis strides across the whole array. numpy copies such a
view element by element in the output's order, with an inner loop as short as the kernel's width
(3): measured 17 ms for one 512x512x3x3 float32 kernel, about 7 ns an element. Every array of
every step of a cell is digested and compared, and a port's ``load_state`` hands the reference's
state to its framework the other way round, so resnet18's channels-last cells spent most of
their comparison time in such copies (docs/performance.md).

The same copy in two passes is 5-6x faster (``benchmarks/test_transposition.py``): first the
output's innermost axes are moved to the end of memory with a batch of 2-d transposes (numpy's
2-d copy streams through both arrays), then the remaining axes are permuted with that whole
block as the inner loop. The bytes are the same as ``np.ascontiguousarray``'s (a test compares
them over every permutation of 2-5 axes).
"""

from __future__ import annotations

import math

import numpy as np


def contiguous(array) -> np.ndarray:
    """``np.ascontiguousarray(array)``, the same array, faster for a permuted view of contiguous
    memory (a transposed kernel or activation); a 0-d array stays 0-d."""
    a = np.asarray(array)
    if a.flags.c_contiguous:  # a 0-d array too, which np.ascontiguousarray would make 1-d
        return a
    if 1 in a.shape or a.size == 0:
        return np.ascontiguousarray(a)
    # memory order: the view's axes by decreasing stride; u is the memory, read in order
    order = sorted(range(a.ndim), key=lambda k: -abs(a.strides[k]))
    u = a.transpose(order)
    if not u.flags.c_contiguous:  # a slice or a broadcast, not a permutation
        return np.ascontiguousarray(a)
    # the output's innermost run of axes that is also a run in memory: one block
    end = order.index(a.ndim - 1)
    start = end
    while start > 0 and order[start - 1] == order[start] - 1:
        start -= 1
    if end == a.ndim - 1:  # that block is innermost in memory already: numpy's copy streams
        return np.ascontiguousarray(a)
    shape = u.shape
    before = math.prod(shape[:start])
    block = math.prod(shape[start : end + 1])
    after = math.prod(shape[end + 1 :])
    # pass 1: memory (before, block, after) -> (before, after, block)
    moved = np.ascontiguousarray(u.reshape(before, block, after).transpose(0, 2, 1))
    # pass 2: the axes outside the block into the output's order, the block as inner loop
    outer = [*order[:start], *order[end + 1 :]]
    outer_view = moved.reshape([shape[k] for k in range(a.ndim) if not start <= k <= end] + [-1])
    permuted = outer_view.transpose([outer.index(axis) for axis in sorted(outer)] + [len(outer)])
    return np.ascontiguousarray(permuted).reshape(a.shape)
