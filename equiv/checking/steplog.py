"""Per step and per quantity: a digest of what the port computed, and how far it was from the
reference, so that two runs can be told apart (``equiv diff``) without keeping their arrays.

A digest is XXH3's 64 bits (the ``xxhash`` package) over an array's dtype, shape and bytes:
equal digests mean bitwise equal arrays (a collision among 2^64 values is not a concern here;
nothing is secret). XXH3 because the log runs on every array of every step: 30 GB/s here,
where SHA-1, hashlib's fastest, made 1.9 GB/s and a resnet18 cell's lockstep 1.2x slower
(docs/performance.md). The scale (the array's largest magnitude) turns an error into ulps of
the array.
"""

from __future__ import annotations

import numpy as np
import xxhash

from equiv.layouts.transposition import contiguous
from equiv.tolerance.policy import max_abs, record_values

#: the digests' algorithm, recorded in a run's settings: digests of two algorithms are not
#: compared (a run of an earlier equiv 0.1 took the first 8 bytes of SHA-1: ``"sha1-64"``)
ALGORITHM = "xxh3_64"


def digest(value) -> int:
    """The array's 64-bit digest (dtype, shape and bytes); a Python float counts as float64."""
    # a transposed view is copied in two passes (equiv.layouts.transposition), not strided
    # through; 0-d as 1-d, as np.ascontiguousarray has always made it (the digests of runs
    # kept by earlier versions stay comparable)
    a = contiguous(value)
    if a.ndim == 0:
        a = a.reshape(1)
    h = xxhash.xxh3_64(f"{a.dtype.str}{a.shape}".encode())
    if a.size:
        h.update(memoryview(a).cast("B"))
    return h.intdigest()


def combined(digests: np.ndarray, keys: list[str]) -> str:
    """One digest (16 hex digits) for a whole cell: its keys and every step's digests."""
    h = xxhash.xxh3_64("\n".join(keys).encode())
    h.update(np.ascontiguousarray(digests, dtype="<u8").tobytes())
    return h.hexdigest()


class StepLog:
    """Every step the port ran: each reported quantity's digest and scale, in the order the
    port reported them on its first step (a later step's extra keys are not logged)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._digests: list[list[int]] = []
        self._scales: list[list[float]] = []

    def add(self, record) -> None:
        values = record_values(record)
        if not self.keys:
            self.keys = list(values)
        row = [values.get(k) for k in self.keys]
        self._digests.append([digest(v) if v is not None else 0 for v in row])
        self._scales.append([max_abs(v) if v is not None else np.nan for v in row])

    @property
    def steps(self) -> int:
        return len(self._digests)

    def digests(self) -> np.ndarray:
        return np.array(self._digests, dtype=np.uint64).reshape(self.steps, len(self.keys))

    def cell_digest(self) -> str | None:
        return combined(self.digests(), self.keys) if self.steps else None

    def arrays(self, checks) -> dict[str, np.ndarray]:
        """DIR/steps/<cell>.npz's arrays (docs/parity-json.md): the port's digests and scales,
        and each check's error and tolerance per compared step and key."""
        out = {
            "keys": np.array(self.keys),
            "digest": self.digests(),
            "scale": np.array(self._scales, dtype=np.float64).reshape(self.steps, len(self.keys)),
        }
        for check in checks:
            keys, error, tolerance = check.comparison.errors()
            out[f"{check.label}/keys"] = np.array(keys)
            out[f"{check.label}/error"] = error
            out[f"{check.label}/tolerance"] = tolerance
        return out
