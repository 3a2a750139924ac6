"""FLOP counts of the seed's two-layer networks, for GFLOP/s in the benchmarks."""

from __future__ import annotations

from typing import Any


def two_layer_step_flops(cfg: dict[str, Any]) -> int:
    """Matmul FLOPs of one training step: forward x@w1, h@w2; backward dW2, dH, dW1.

    Elementwise work (activation, loss, update) is O(N*H) and left out: it is below 2% here.
    """
    n, d_in, h, d_out = cfg["N"], cfg["D_in"], cfg["H"], cfg["D_out"]
    forward = 2 * n * d_in * h + 2 * n * h * d_out
    backward = 2 * n * h * d_out * 2 + 2 * n * d_in * h
    return forward + backward
