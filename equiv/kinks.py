"""ReLU masks for the references, with the calibration's "adversarial rounding" switch.

A ReLU's gradient jumps at 0. Where a pre-activation lies within rounding distance of 0, a
correct float32 implementation may land on either side and its gradient legitimately differs
from the reference's by a whole unit's contribution, and its trajectory carries that difference
on. The tolerance calibration therefore runs a float32 shadow that flips every such unit
(``flip_eps`` > 0): whatever a float32 rounding could flip, the shadow flips, so the measured
spread covers it. The reference proper always runs with ``flip_eps = 0``.
"""

from __future__ import annotations

import numpy as np


def relu_mask(h: np.ndarray, magnitude: np.ndarray | None = None, flip_eps: float = 0.0):
    """``h > 0``; with ``flip_eps``, units with |h| <= flip_eps * magnitude are flipped.

    ``magnitude`` is sum_i |x_i w_i| (+ |b|) for each pre-activation: eps times it is the
    classical first-order bound on the rounding error of that dot product.
    """
    mask = h > 0
    if flip_eps and magnitude is not None:
        mask ^= np.abs(h) <= flip_eps * magnitude
    return mask
