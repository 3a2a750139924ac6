"""Minibatches as the reference sees them: one training step is one minibatch.

A case whose config has ``batch_size`` trains on minibatches of its data, in order, with no
shuffling, the last batch of an epoch keeping what is left (``DataLoader(drop_last=False)``,
``tf.data.Dataset.batch``, Keras ``fit``'s own batching). Step t trains on batch
``t % batches_per_epoch``; every array of the case's data is split along its first axis. Each
framework's implementation uses its own data pipeline; this module is only the reference's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
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
    start = (t % math.ceil(n / batch_size)) * batch_size  # batch_slices(n, batch_size)[t % ...]
    return {k: v[start : start + batch_size] for k, v in data.items()}


def cycled_batches(state, to_native) -> Iterator[tuple]:
    """(x, y) minibatches in order, converted once by ``to_native``, epoch after epoch: the
    pipeline of the implementations that have no data pipeline of their own to use (plain
    slices: the Keras loops and JAX)."""
    x, y = state.data["x"], state.data["y"]
    batches = [
        (to_native(x[s]), to_native(y[s])) for s in batch_slices(len(x), state.config["batch_size"])
    ]
    return itertools.cycle(batches)
