"""The record a calibration produces: per-step tolerances of one (case, seed, steps, dtype).

Its own module so that the store (which writes and reads it) and the policy (which computes it)
both depend on it, and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """Per-step tolerances of one (case, seed, steps, dtype), plus the float64 branch path."""

    dtype: str
    keys: tuple[str, ...]
    tol: dict[str, np.ndarray]
    scale: dict[str, np.ndarray]
    amplification: dict[str, np.ndarray]
    branches: tuple[str | None, ...]
    losses64: np.ndarray
    #: the first step a float32 implementation cannot be held to the float64 reference at:
    #: the calibration's flipping shadow, a correct float32 run, has left the float64
    #: trajectory (its loss off by more than 1/K of the loss's range so far); None: never.
    #: Only where kinks are measured (resnet18's chaotic float32 training)
    horizon: int | None = None

    def tolerance(self, key: str, step: int) -> float:
        return float(self.tol[key][step])

    def ambiguous(self, step: int, threshold: float) -> bool:
        """Whether the branch decision at ``step`` rests on a loss within tolerance of the
        threshold (so that a correct implementation may take either branch)."""
        if step == 0:
            return False  # decided on the given initial prev_loss, not on a computed value
        prev = step - 1
        return abs(self.losses64[prev] - threshold) <= self.tol["loss"][prev]
