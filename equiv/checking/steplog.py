"""Per step and per quantity: a digest of what the port computed, and how far it was from the
reference, so that two runs can be told apart (``equiv diff``) without keeping their arrays.

A digest is the first 8 bytes of SHA-1 over an array's dtype, shape and bytes: equal digests
mean bitwise equal arrays (a collision among 2^64 values is not a concern here; nothing is
secret). SHA-1 because it is hashlib's fastest here (SHA extensions: 1.9 GB/s, a sixth of what
comparing the same array with the reference costs). The scale (the array's largest magnitude)
turns an error into ulps of the array.
"""

from __future__ import annotations

import hashlib

import numpy as np

from equiv.tolerance.policy import max_abs, record_values


def digest(value) -> int:
    """The array's 64-bit digest (dtype, shape and bytes); a Python float counts as float64."""
    a = np.ascontiguousarray(value)
    h = hashlib.sha1(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B") if a.size else b"")
    return int.from_bytes(h.digest()[:8], "little")


def combined(digests: np.ndarray, keys: list[str]) -> str:
    """One digest (16 hex digits) for a whole cell: its keys and every step's digests."""
    h = hashlib.sha1("\n".join(keys).encode())
    h.update(np.ascontiguousarray(digests, dtype="<u8").tobytes())
    return h.hexdigest()[:16]


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
