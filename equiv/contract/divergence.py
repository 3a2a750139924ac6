"""A first divergence (where a comparison first left its tolerance), worded in one place.

``Divergence`` is what ``Comparison`` records: ``step``, ``quantity`` (``loss``, ``grads``,
``params``, ``branch``, ``dtype``, ``non-finite``), ``name`` (the parameter), ``phase``
(forward, backward, update, control flow), and either ``error`` and ``tolerance`` or a
``detail`` in words; ``to_json`` is its object in parity.json (docs/parity-json.md).
``describe`` is the wording of verdict reasons; ``sentence`` the report's, which reads the JSON
of any equiv version and so checks every field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: how the report names a quantity in a sentence
QUANTITY_WORDS = {
    "loss": "loss",
    "grads": "gradient",
    "params": "parameter after the update",
    "branch": "branch taken",
    "dtype": "dtype",
    "non-finite": "non-finite value",
}


@dataclass(frozen=True)
class Divergence:
    step: int
    quantity: str
    name: str | None = None
    phase: str | None = None
    error: float | None = None
    tolerance: float | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.step, "quantity": self.quantity, "name": self.name}
        if self.phase is not None:
            out["phase"] = self.phase
        if self.error is not None:
            out["error"] = self.error
            out["tolerance"] = self.tolerance
        if self.detail is not None:
            out["detail"] = self.detail
        return out

    def describe(self) -> str:
        return describe(self.to_json())

    def sentence(self) -> str:
        return sentence(self.to_json())


def as_json(div: Divergence | dict[str, Any] | None) -> dict[str, Any] | None:
    return div.to_json() if isinstance(div, Divergence) else div


def describe(div: Divergence | dict[str, Any]) -> str:
    """The words of a ``fail`` verdict's reason: ``first divergence at step 3, grads w1
    (backward): error 2e-05 > tolerance 1e-06``."""
    div = as_json(div)
    where = f"step {div['step']}, {div['quantity']}"
    if div.get("name"):
        where += f" {div['name']}"
    if "error" in div:
        return (
            f"first divergence at {where} ({div['phase']}): "
            f"error {div['error']:.3g} > tolerance {div['tolerance']:.3g}"
        )
    return f"first divergence at {where}: {div.get('detail', '')}"


def as_float(value: Any) -> float | None:
    """A number from JSON; equiv writes Inf and NaN as the strings "inf" and "nan"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def fmt_ratio(value: float | None) -> str:
    """An error as a fraction of its tolerance, as the report prints it."""
    if value is None:
        return ""
    if math.isinf(value):
        return "∞"
    if value == 0:
        return "0"  # an exact match
    if value < 0.01:
        return f"{value:.0e}"
    if value < 10:
        return f"{value:.2f}"
    if value < 1000:
        return f"{value:.0f}"
    return f"{value:.1e}"


def sentence(div: Any) -> str:
    """One sentence a newcomer can read: where the cell first left its tolerance, and how."""
    if not isinstance(div, dict):
        return ""
    quantity = str(div.get("quantity", "?"))
    words = QUANTITY_WORDS.get(quantity, quantity)
    name = div.get("name")
    text = f"step {div.get('step', '?')}: {words}"
    if name:
        text += f" of {name}" if quantity in ("grads", "params") else f" in {name}"
    if div.get("phase") and div.get("phase") != quantity:
        text += f" ({div['phase']})"
    error, tol = as_float(div.get("error")), as_float(div.get("tolerance"))
    if error is not None and tol is not None:
        ratio = error / tol if tol > 0 else math.inf
        text += f": error {error:.3g} > tolerance {tol:.3g} ({fmt_ratio(ratio)}×)"
    elif div.get("detail"):
        text += f": {div['detail']}"
    return text
