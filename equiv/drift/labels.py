"""Pairing two runs' cells by id and labelling each pair.

Each side is judged against its own float64 reference and its own derived tolerance, so a
label needs no tolerance of its own: a cell that stays within its tolerance on both sides and
changed is rounding drift, however its bits moved; one that left it is a regression. The size
of a drift is given in the units a reader can weigh: how far the port's distance from the
reference moved, as a fraction of the tolerance and in ulps of the array's largest magnitude.
That movement is a lower bound on how far the arrays themselves moved (|‖n − r‖ − ‖o − r‖| ≤
‖n − o‖); the arrays are not kept, so the exact distance between OLD and NEW is not known.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from equiv.checking.compare import error_ratios
from equiv.drift.sides import Side
from equiv.report.model import OK_STATUSES, largest_ratio, severity

IDENTICAL = "identical"
DRIFT = "drift"
REGRESSION = "regression"
FIXED = "fixed"
EXPLANATION = "changed explanation"
INCOMPARABLE = "not comparable"
MISSING = "missing"
STILL_FAILING = "still failing"
#: a side without digests (an older run), the same status and ratios: bitwise identity
#: cannot be told
UNCHANGED = "unchanged"
SKIPPED = "skipped"
#: most telling first (the page's and the summary's order)
LABELS = (
    REGRESSION,
    FIXED,
    EXPLANATION,
    INCOMPARABLE,
    MISSING,
    STILL_FAILING,
    DRIFT,
    UNCHANGED,
    IDENTICAL,
    SKIPPED,
)
#: within tolerance of what the verdict rests on: a move between these is no regression
WITHIN = OK_STATUSES
EPS = {"float32": float(np.finfo(np.float32).eps), "float64": float(np.finfo(np.float64).eps)}


@dataclass
class PairDiff:
    id: str
    case: str
    backend: str
    dtype: str
    label: str
    #: one sentence: why this label
    why: str
    old: dict[str, Any] | None = None
    new: dict[str, Any] | None = None
    #: for a pair that changed: the size of the change (``drift_size``)
    drift: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "case": self.case,
            "backend": self.backend,
            "dtype": self.dtype,
            "label": self.label,
            "why": self.why,
            "old": _brief(self.old),
            "new": _brief(self.new),
            "drift": self.drift,
        }


def _brief(cell: dict[str, Any] | None) -> dict[str, Any] | None:
    if cell is None:
        return None
    return {
        "status": cell.get("status"),
        "reason": cell.get("reason"),
        "steps": cell.get("steps"),
        "compared_steps": cell.get("compared_steps"),
        "worst": worst(cell),
        "digest": cell.get("digest"),
        "explanation": explanation_of(cell),
    }


@dataclass
class DiffResult:
    old: Side
    new: Side
    pairs: list[PairDiff]
    #: what a reader must know about the two sides (other CPUs, a cut-off run)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        found = Counter(p.label for p in self.pairs)
        return {label: found.get(label, 0) for label in LABELS}

    @property
    def regressed(self) -> bool:
        return any(p.label == REGRESSION for p in self.pairs)

    def versions_changed(self) -> dict[str, tuple[str | None, str | None]]:
        old = self.old.environment.get("versions") or {}
        new = self.new.environment.get("versions") or {}
        return {
            k: (old.get(k), new.get(k))
            for k in sorted(old.keys() | new.keys())
            if old.get(k) != new.get(k)
        }


def worst(cell: dict[str, Any]) -> float | None:
    """The cell's largest error ÷ tolerance against what its verdict rests on: the reference
    (pass, fail), the declared variant (explained)."""
    if cell.get("status") == "explained" and cell.get("explanation"):
        return largest_ratio(cell["explanation"].get("variant_result") or {})
    return largest_ratio(cell)


def explanation_of(cell: dict[str, Any]) -> dict[str, Any] | None:
    """The declared difference a cell's verdict rests on (None: the plain reference)."""
    if cell.get("status") != "explained" or not cell.get("explanation"):
        return None
    e = cell["explanation"]
    # in JSON's form (lists, not tuples): a cell read from a document and one still in
    # memory (``CellResult.to_json``, as the test suite compares) declare alike
    variant = json.loads(json.dumps(e.get("variant")))
    return {"reason": e.get("reason"), "variant": variant}


def run_differences(old: Side, new: Side) -> list[str]:
    """Settings that make every pair incomparable: the cells were not asked the same thing."""
    out = []
    for key, what in (
        ("seed", "seed"),
        ("reference", "reference"),
        ("declarations", "declarations honoured"),
        ("resync", "resynchronised stepping"),
    ):
        a, b = old.settings.get(key), new.settings.get(key)
        if key in old.settings and key in new.settings and a != b:
            out.append(f"{what} {a!r} in OLD, {b!r} in NEW")
    return out


def cell_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """How two cells were run differently (a field one side lacks, an older baseline's, is
    not held against it)."""
    out = []

    def both(key: str) -> bool:
        return key in a and key in b and a[key] != b[key]

    if both("steps"):
        out.append(f"{a['steps']} steps in OLD, {b['steps']} in NEW")
    if both("resynchronised_from"):
        ra, rb = a["resynchronised_from"], b["resynchronised_from"]
        out.append(f"{_compared(ra)} in OLD, {_compared(rb)} in NEW")
    return out


def _compared(resync: int | None) -> str:
    return "free-running" if resync is None else f"resynchronised from step {resync}"


def diff_sides(old: Side, new: Side) -> DiffResult:
    result = DiffResult(old, new, [])
    features = (old.environment.get("cpu_features"), new.environment.get("cpu_features"))
    if None not in features and features[0] != features[1]:
        result.notes.append(
            "the runs come from CPUs with different vector instructions "
            f"({features[0]} / {features[1]}): bitwise identity is not to be expected, and "
            "each side is judged against its own tolerance"
        )
    for side in (old, new):
        if side.incomplete is not None:
            why = side.incomplete.get("reason", "incomplete")
            result.notes.append(
                f"{side.label} is a run that was cut off ({why}): compared on the cells it "
                "has; the others are labelled missing"
            )
    if old.digest_algorithm != new.digest_algorithm:
        result.notes.append(
            f"the runs' digests were made by different algorithms ({old.digest_algorithm} / "
            f"{new.digest_algorithm}, an equiv upgrade): bitwise identity cannot be told, and "
            "changes are sized from the errors against the reference"
        )
    settings = run_differences(old, new)
    for cell_id in sorted(old.cells.keys() | new.cells.keys()):
        result.pairs.append(label_pair(cell_id, old, new, settings))
    return result


def label_pair(cell_id: str, old: Side, new: Side, settings: list[str]) -> PairDiff:
    a, b = old.cells.get(cell_id), new.cells.get(cell_id)
    some = a or b or {}
    pair = PairDiff(cell_id, some.get("case"), some.get("backend"), some.get("dtype"), "", "", a, b)
    if a is None or b is None:
        side = new if b is None else old
        cut = " (that run was cut off before it)" if side.incomplete is not None else ""
        pair.label, pair.why = MISSING, f"not in {side.label}{cut}"
        return pair
    if settings:
        pair.label, pair.why = INCOMPARABLE, "; ".join(settings)
        return pair
    sa, sb = a["status"], b["status"]
    if "skip" in (sa, sb):
        if sa == sb:
            pair.label, pair.why = SKIPPED, f"skipped on both sides ({b.get('reason', '')})"
        else:
            which, other = ("OLD", a) if sa == "skip" else ("NEW", b)
            pair.label = INCOMPARABLE
            pair.why = f"skipped in {which}: {other.get('reason', '')}"
        return pair
    differs = cell_differences(a, b)
    if differs:
        pair.label, pair.why = INCOMPARABLE, "; ".join(differs)
        return pair
    bits = old.digest_algorithm == new.digest_algorithm  # else digests tell nothing
    same_bits = bits and a.get("digest") is not None and a.get("digest") == b.get("digest")
    if not same_bits:
        pair.drift = drift_size(old, new, a, b, bits)
    # the report's order of severity (``equiv.report.model.SEVERITY``): most severe first
    if not (sa in WITHIN and sb in WITHIN) and severity(sa) != severity(sb):
        pair.label = REGRESSION if severity(sb) < severity(sa) else FIXED
        pair.why = f"{sa} in OLD, {sb} in NEW" + _about(b if pair.label == REGRESSION else a)
        return pair
    ea, eb = explanation_of(a), explanation_of(b)
    if ea != eb:
        pair.label = EXPLANATION
        pair.why = _explanation_change(ea, eb)
        return pair
    if same_bits:
        pair.label, pair.why = IDENTICAL, "every quantity of every step bitwise the same"
        return pair
    if sa not in WITHIN:
        pair.label = STILL_FAILING
        pair.why = f"{sa} on both sides" + _about(b)
        return pair
    no_digests = not bits or a.get("digest") is None or b.get("digest") is None
    if no_digests and worst(a) == worst(b):
        pair.label = UNCHANGED
        pair.why = "same status and largest error ÷ tolerance; no digests to tell the bits"
        return pair
    pair.label = DRIFT
    pair.why = f"changed, within tolerance on both sides: {describe_drift(pair.drift)}"
    return pair


def _about(cell: dict[str, Any]) -> str:
    reason = (cell.get("reason") or "").strip()
    return f" ({reason[:200]})" if reason else ""


def _explanation_change(ea: dict | None, eb: dict | None) -> str:
    if ea is None:
        return f"a declared difference is needed in NEW, none in OLD: {eb['reason']}"
    if eb is None:
        return f"the declared difference needed in OLD is not in NEW: {ea['reason']}"
    return f"declared difference {ea['variant']} in OLD, {eb['variant']} in NEW"


def drift_size(
    old: Side, new: Side, a: dict[str, Any], b: dict[str, Any], bits: bool = True
) -> dict[str, Any]:
    """How far a changed cell moved: from the step records where both runs kept them, else
    from the largest error ÷ tolerance alone; ``bits``: the two sides' digests are alike."""
    found = {"worst_old": worst(a), "worst_new": worst(b)}
    ra, rb = old.step_records(a), new.step_records(b)
    if ra is None or rb is None:
        change = None
        if found["worst_old"] is not None and found["worst_new"] is not None:
            change = abs(found["worst_new"] - found["worst_old"])
        return {**found, "from": "largest ratios", "tolerance_fraction": change, "ulps": None}
    return {**found, "from": "step records", **_from_steps(ra, rb, a, bits)}


def _aligned(ra: dict, rb: dict, keys: str, *names: str) -> tuple[list[str], list, list]:
    """Both sides' ``names`` arrays (steps, keys) on the keys and steps they share."""
    ka, kb = list(ra[keys]), list(rb[keys])
    common = [k for k in ka if k in kb]
    ia, ib = [ka.index(k) for k in common], [kb.index(k) for k in common]
    n = min(min(len(ra[name]), len(rb[name])) for name in names)
    return common, [ra[x][:n, ia] for x in names], [rb[x][:n, ib] for x in names]


def _from_steps(ra: dict, rb: dict, cell: dict[str, Any], bits: bool) -> dict[str, Any]:
    keys, (da,), (db,) = _aligned(ra, rb, "keys", "digest")
    changed = np.argwhere(da != db)
    first = None
    if bits and len(changed):
        step, col = changed[0]
        first = {"step": int(step), "quantity": keys[col]}
    label = (
        "variant" if cell.get("status") == "explained" and "variant/error" in ra else "reference"
    )
    if f"{label}/error" not in ra or f"{label}/error" not in rb:
        return {"first_changed": first, "tolerance_fraction": None, "ulps": None}
    both, (ea, tol), (eb, _) = _aligned(
        ra, rb, f"{label}/keys", f"{label}/error", f"{label}/tolerance"
    )
    n = len(ea)
    move = np.abs(eb - ea)
    fraction = error_ratios(move, tol)
    out: dict[str, Any] = {"first_changed": first, "steps_compared": int(n)}
    if not fraction.size:
        return {**out, "tolerance_fraction": 0.0, "ulps": None, "largest_at": None}
    # the largest move in tolerance units, and its size in ulps there: the largest in ulps
    # anywhere would be a quantity that is rounding noise (resnet18's conv biases before a
    # BatchNorm have a true gradient of 0: any error is ~100% of their scale)
    step, col = np.unravel_index(int(np.argmax(fraction)), fraction.shape)
    key = both[col]
    ulps = None
    logged = list(ra["keys"])
    if key in logged:
        scale = float(ra["scale"][step, logged.index(key)])
        if scale > 0:
            ulps = float(move[step, col]) / (EPS[cell["dtype"]] * scale)
    return {
        **out,
        "tolerance_fraction": float(fraction[step, col]),
        "ulps": ulps,
        "largest_at": {"step": int(step), "quantity": key},
    }


def describe_drift(drift: dict[str, Any] | None) -> str:
    if not drift:
        return "size unknown"
    parts = []
    frac, ulps = drift.get("tolerance_fraction"), drift.get("ulps")
    if frac == 0:
        parts.append("the bits changed, the error against the reference did not")
    elif frac is not None:
        where = drift.get("largest_at")
        at = ""
        if where:
            size = f": {ulps:.3g} ulps" if ulps is not None else ""
            at = f" (step {where['step']}, {where['quantity']}{size})"
        parts.append(
            f"the error against the reference moved by up to {frac:.3g} of the tolerance{at}"
        )
    first = drift.get("first_changed")
    if first:
        parts.append(f"first at step {first['step']} ({first['quantity']})")
    wo, wn = drift.get("worst_old"), drift.get("worst_new")
    if wo is not None and wn is not None:
        parts.append(f"largest error ÷ tolerance {wo:.3g} in OLD, {wn:.3g} in NEW")
    return "; ".join(parts)
