"""Central finite differences against a hand-written gradient, in float64.

One check for every hand-written backward: the blocks of ``equiv.reference.layers``, a case's
reference
(``tests/test_reference.py``) and a user's case (the case conformance kit). A sample of each
input's entries is moved by +-h and the loss's central difference compared with the analytic
gradient there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

#: relative agreement demanded of the analytic gradient
RTOL = 1e-5
#: the step, relative to the entry's magnitude (at least 1): truncation O(h^2 f''') and
#: rounding O(eps |f| / h) are both far below RTOL at this h in float64
STEP = 1e-5
#: a floor on the scale an error is measured against, relative to |loss| / h: an entry whose
#: gradient is smaller than the difference quotient's own rounding noise cannot be checked
#: more finely than that noise (about eps |f| / h; this allows 4e7 times it)
NOISE = 1e-8


def check_gradients(
    loss_fn: Callable[[dict[str, np.ndarray]], float],
    inputs: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    *,
    samples: int = 12,
    rtol: float = RTOL,
    step: float = STEP,
    seed: int = 0,
) -> int:
    """Check ``grads[name]`` (the analytic d loss / d inputs[name]) against central
    differences of ``loss_fn`` at up to ``samples`` random entries of each input named in
    ``grads`` (every entry when there are fewer). ``loss_fn`` takes a dict like ``inputs``
    (float64 copies, one entry moved) and returns a scalar.

    Raises ``AssertionError`` naming the input, the entry and both values at the first
    disagreement; returns how many entries were checked."""
    base = {k: np.array(v, dtype=np.float64) for k, v in inputs.items()}
    loss = float(loss_fn({k: v.copy() for k, v in base.items()}))
    rng = np.random.default_rng(seed)
    checked = 0
    for name, analytic in grads.items():
        value, analytic = base[name], np.asarray(analytic)
        assert analytic.shape == value.shape, (name, analytic.shape, value.shape)
        picks = rng.choice(value.size, size=min(samples, value.size), replace=False)
        for flat in picks:
            idx = np.unravel_index(flat, value.shape)
            h = step * max(1.0, abs(float(value[idx])))
            numeric = (
                _moved(loss_fn, base, name, idx, h) - _moved(loss_fn, base, name, idx, -h)
            ) / (2 * h)
            got = float(analytic[idx])
            scale = max(abs(numeric), abs(got), NOISE * abs(loss) / h)
            assert abs(numeric - got) <= rtol * scale, (
                f"d loss / d {name}{list(idx)}: analytic {got!r}, central difference {numeric!r}"
            )
            checked += 1
    return checked


def _moved(loss_fn, base: dict, name: str, idx: tuple, h: float) -> float:
    moved = {k: v.copy() for k, v in base.items()}
    moved[name][idx] += h
    return float(loss_fn(moved))
