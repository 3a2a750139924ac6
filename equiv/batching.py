"""Minibatches as the reference sees them: one training step is one minibatch.

A case whose config has ``batch_size`` trains on minibatches of its data, in order, with no
shuffling, the last batch of an epoch keeping what is left (``DataLoader(drop_last=False)``,
``tf.data.Dataset.batch``, Keras ``fit``'s own batching). Step t trains on batch
``t % batches_per_epoch``; every array of the case's data is split along its first axis. Each
framework's implementation uses its own data pipeline; this module is only the reference's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """The batches of one epoch over ``n`` samples: full ones, then a partial last one."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def batches_per_epoch(cfg: dict[str, Any]) -> int:
    return math.ceil(cfg["N"] / cfg["batch_size"])


def step_data(data: dict[str, np.ndarray], cfg: dict[str, Any], t: int) -> dict[str, np.ndarray]:
    """The data that step ``t`` trains on: all of it, or the step's minibatch."""
    batch_size = cfg.get("batch_size")
    if batch_size is None:
        return data
    n = len(next(iter(data.values())))
    slices = batch_slices(n, batch_size)
    batch = slices[t % len(slices)]
    return {k: v[batch] for k, v in data.items()}
