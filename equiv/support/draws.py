"""The draws that case specs share: data and initial parameters from the harness's generator.

A spec's ``draw(rng, cfg)`` returns ``(data, params)`` in float64 (``CaseSpec.make_state``).
The numbers must come from ``rng`` alone, in a fixed order, never from a framework's RNG:
every backend and dtype of a case then starts from the same state. These are the draws the
seed's programs make (``torch.randn`` data and weights, ``nn.Linear``'s and Keras's default
initialisations), written once; numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def standard_normal(
    rng: np.random.Generator, shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """One standard normal array per name, drawn in the order of ``shapes`` (``torch.randn``)."""
    return {name: rng.standard_normal(shape) for name, shape in shapes.items()}


def regression_data(rng: np.random.Generator, cfg: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The seed's data: x (N, D_in) and y (N, D_out), standard normal, x first."""
    n = cfg["N"]
    return standard_normal(rng, {"x": (n, cfg["D_in"]), "y": (n, cfg["D_out"])})


def glorot_uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Keras's default kernel initializer: uniform in +-sqrt(6 / (fan_in + fan_out)), canonical
    (in, out)."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def torch_linear(
    rng: np.random.Generator, fan_in: int, fan_out: int
) -> tuple[np.ndarray, np.ndarray]:
    """``nn.Linear``'s default initialisation: the weight (kaiming_uniform with a=sqrt(5)) and the
    bias both uniform in +-1/sqrt(fan_in), kernel first; the kernel canonical (in, out)."""
    bound = 1.0 / np.sqrt(fan_in)
    kernel = rng.uniform(-bound, bound, size=(fan_in, fan_out))
    bias = rng.uniform(-bound, bound, size=fan_out)
    return kernel, bias
