"""A ``StepRecord`` from a step's native values: the conversion every trainer's ``record`` does.

A trainer reports each step as numpy arrays under the canonical parameter names
(``equiv.contract.records.StepRecord``). What differs between frameworks is only how a native value
becomes numpy, and that is the backend's ``to_numpy``; so one function builds every record.
Framework-neutral: it imports numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from equiv.contract.records import StepRecord

#: a backend's ``to_numpy``: a native tensor, variable or array -> a numpy array (a copy)
ToNumpy = Callable[[Any], np.ndarray]


def step_record(
    to_numpy: ToNumpy,
    loss: Any,
    grads: Mapping[str, Any] | Sequence[Any],
    params: Mapping[str, Any],
    branch: str | None = None,
    *,
    activations: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
) -> StepRecord:
    """The step's record: ``loss`` before the update, ``grads`` and ``params`` after it.

    ``params`` maps canonical names to the native parameters, in the case's order; ``grads``
    maps the same names to gradients, or is a sequence in the order of ``params`` (as an
    autodiff call returns the gradients of a list of variables). ``activations``, ``state``
    and ``evaluation`` (by canonical name) for cases that declare them. Every value goes through
    ``to_numpy``, so a record is a snapshot: the next step does not change it.
    """
    if not isinstance(grads, Mapping):
        grads = dict(zip(params, grads, strict=True))
    return StepRecord(
        loss=to_numpy(loss)[()],
        grads={name: to_numpy(grad) for name, grad in grads.items()},
        params={name: to_numpy(param) for name, param in params.items()},
        branch=branch,
        activations=_converted(to_numpy, activations),
        state=_converted(to_numpy, state),
        evaluation=_converted(to_numpy, evaluation),
    )


def _converted(to_numpy: ToNumpy, values: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    return {name: to_numpy(value) for name, value in (values or {}).items()}


def with_zero_grads(
    grads: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Every parameter's gradient, zeros for those the step did not use (a branch not taken),
    as the reference reports them: a gradient that was not computed is a zero gradient."""
    return {name: grads[name] if name in grads else np.zeros_like(p) for name, p in params.items()}
