"""Diagnosis: why a failing cell differs from its reference, found in the catalogue of known
framework differences (``equiv.catalogue``) rather than declared by someone who knew.

The search is greedy over the catalogue's entries. Each round runs the implementation once, in
lockstep with one reference variant per candidate (the set so far plus one entry, or two where
no single one helps), and keeps the candidate that moves the first divergence furthest: to a
later step or quantity, or the same one ``SHRINK`` times smaller. A candidate's reference stops
at its own first divergence, so most rounds cost a few steps. What prunes and orders the
candidates:

- the case's config: an entry applies only where the config has its keys (and, under a
  reference port, only where that port can express them);
- the phase: a divergence at step 0 (or a one-step bug found by teacher forcing) in phase P
  cannot come from an entry that acts after P (an optimizer setting cannot change step 0's
  loss);
- the cell's framework only orders the candidates (its own defaults first, which also breaks
  ties); it never filters them: a torch port with Keras's Adam epsilon is a porting mistake
  to find;
- ``compute_dtype`` (a precision, not a difference) is tried only when no named entry moves the
  search on: it lowers the yardstick and would otherwise swallow small named differences.

During the search every candidate is held to the cell's own tolerance (the plain reference's
calibration, or the float32 one for a ``compute_dtype`` candidate): it only ranks. The proof is
that of a declared explanation: the merged variant, with its own calibration, matches over the
whole run (up to a float32 horizon), and each member is needed (without it the variant
diverges; a member that is not is dropped and the rest proven again). Found is not a pass: the
cell stays ``fail``, with the declaration to paste into the spec.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from equiv.backends.reference_port import variant_refusal
from equiv.catalogue.entries import ENTRIES, PHASES, Difference
from equiv.checking.compare import Check, Comparison
from equiv.contract.divergence import Divergence, as_json, describe
from equiv.contract.trainer import check_trainer
from equiv.tolerance.policy import quantity_keys

#: a candidate that leaves the first divergence where it was must shrink it this many times
#: to be taken into the set
SHRINK = 2.0
#: a set that does not match is reported ("partly") only where it moved the first divergence
#: to a later step or quantity, or shrank it this many times: orders of magnitude, not noise
PARTLY = 100.0
#: the most entries a found set may have (the largest declared set today has 7 keys)
MAX_MEMBERS = 8
#: candidate references stepped side by side in one round are bounded in memory: a float64
#: reference holds about this many times its parameters' bytes (resnet18's numpy reference:
#: 1.7 GB for 90 MB of parameters)
REFERENCE_BYTES_PER_PARAMETER_BYTE = 20
MAX_ROUND_BYTES = 2 * 1024**3

#: where a divergence's phase sits among the catalogue's phases
PHASE_ORDER = {
    "control flow": 0,
    "forward": 0,
    "backward": 1,
    "update": 2,
    "state update": 3,
    "evaluation forward": 3,
}


@dataclass
class Member:
    entry: Difference
    overrides: dict[str, Any]
    #: the first divergence of the variant without this member: what it accounts for
    without: Divergence | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.entry.id,
            "what": self.entry.what,
            "sources": list(self.entry.sources),
            "phase": self.entry.phase,
            "variant": _jsonable(self.overrides),
            "without_it": as_json(self.without),
        }


@dataclass
class Diagnosis:
    #: "found", "partly" or "not found"
    outcome: str
    members: list[Member]
    #: the declared variant the search started from (a declaration that did not account)
    base: dict[str, Any]
    #: the divergence to explain: the reference's, or the declared variant's
    divergence: Divergence
    #: where the best set's first divergence is (None: it matches)
    reached: Divergence | None = None
    proof: str = ""
    rounds: int = 0
    candidates: int = 0
    seconds: float = 0.0

    @property
    def variant(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for m in self.members:
            out.update(m.overrides)
        return out

    def sentence(self) -> str:
        if self.outcome == "found":
            causes = "; ".join(f"{m.entry.what} [{m.entry.id}]" for m in self.members)
            return f"differs from the reference because: {causes}. {self.proof}"
        if self.outcome == "partly":
            names = ", ".join(m.entry.id for m in self.members)
            return (
                f"partly explained by {names}: with them the first divergence moves from "
                f"{describe(self.divergence)} to {describe(self.reached)}; nothing in the "
                "catalogue accounts for the rest"
            )
        return "no known difference in the catalogue accounts for it"

    def declaration(self, backend_id: str, dtype: str) -> str:
        """The ``Explanation`` that makes the cell ``explained``, to paste into the spec."""
        if self.outcome != "found":
            return ""
        reason = "; ".join(m.entry.what for m in self.members)
        return (
            "Explanation(\n"
            f"    backends={backend_id!r},\n"
            f"    dtypes={dtype!r},\n"
            f"    reason={reason!r},\n"
            f"    variant={self.variant!r},\n"
            ")"
        )

    def to_json(self, backend_id: str = "", dtype: str = "") -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "members": [m.to_json() for m in self.members],
            "variant": _jsonable(self.variant),
            "base": _jsonable(self.base),
            "divergence": as_json(self.divergence),
            "reached": as_json(self.reached),
            "sentence": self.sentence(),
            "declaration": self.declaration(backend_id, dtype),
            "rounds": self.rounds,
            "candidates": self.candidates,
            "seconds": round(self.seconds, 2),
        }


def _jsonable(variant: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in variant.items()}


@dataclass
class FailingCell:
    """What the search needs of the failing cell: its spec and port, its start state, and how
    its checks are made (the runner's, so that calibrations come from the same store)."""

    spec: Any
    backend: Any
    module: Any
    state: Any
    steps: int
    #: (variant items, calibrate?) -> Check: the runner's check factory
    make_check: Callable[[tuple, bool], Check]
    not_observed: dict[str, str]
    derived: dict[str, Any]


@dataclass
class Position:
    """How far a variant matched: its first divergence's step and quantity index, and the
    size of the miss there (ratio to tolerance). A match is past every step."""

    step: float
    key: int
    ratio: float
    divergence: Divergence | None

    def later_than(self, other: Position) -> bool:
        """Moved on: a later step or quantity, or the same one ``SHRINK`` times smaller."""
        if (self.step, self.key) != (other.step, other.key):
            return (self.step, self.key) > (other.step, other.key)
        return self.ratio * SHRINK <= other.ratio

    def rank(self) -> tuple:
        return (self.step, self.key, -self.ratio)


def position(comparison: Comparison) -> Position:
    return _position_of(comparison.first_divergence, comparison.keys)


def _position_of(div: Divergence | None, keys: list[str]) -> Position:
    if div is None:
        return Position(math.inf, 0, 0.0, None)
    key = div.quantity if not div.name else f"{div.quantity}/{div.name}"
    index = keys.index(key) if key in keys else len(keys)
    ratio = (
        div.error / div.tolerance
        if div.error is not None and div.tolerance
        else (math.inf if div.error else 0.0)
    )
    return Position(div.step, index, ratio, div)


def diagnose(
    cell: FailingCell,
    divergence: Divergence,
    base: dict[str, Any],
    phase_limit: str | None = None,
    emit: Callable[[str], None] | None = None,
) -> Diagnosis:
    """Search, then prove. ``divergence``: the cell's first divergence (against the declared
    variant ``base`` where one is declared); ``phase_limit``: the phase of a one-step bug
    (step 0, or teacher-forced), which prunes entries acting after it.

    A round tries each candidate entry added to the set; where none moves the search on, each
    pair of them (two differences can cancel each other's effect: Keras's epsilon 1e-7 alone
    is further from Keras's Adam than torch's 1e-8 is, until the epsilon-hat form comes with
    it); where no pair does, the last-resort entries (``compute_dtype``)."""
    say = emit or _stderr
    started = time.perf_counter()
    label = f"{cell.spec.name}-{cell.backend.id}-{cell.state.dtype}"
    result = Diagnosis("not found", [], dict(base), divergence)
    chosen: list[Member] = []
    start = here = _position_of(divergence, quantity_keys(cell.spec))
    while len(chosen) < MAX_MEMBERS and here.divergence is not None:
        config = _merged(cell.spec.config, base, chosen)
        limit = phase_limit if not chosen else None
        if here.divergence.step == 0:
            limit = here.divergence.phase
        named = _candidates(cell, config, chosen, limit, last_resort=False)
        tiers = [
            ("singles", [[m] for m in named]),
            ("pairs", [list(p) for p in itertools.combinations(named, 2) if _compatible(p)]),
            ("last resort", [[m] for m in _candidates(cell, config, chosen, None, True)]),
        ]
        moved = None
        for tier, moves in tiers:
            if not moves:
                continue
            result.rounds += 1
            result.candidates += len(moves)
            say(f"equiv diagnose {label}: round {result.rounds}, {len(moves)} {tier}")
            best, at = _try(cell, base, chosen, moves)[0]
            if at.later_than(here):
                moved = best, at
                break
        if moved is None:
            break
        best, here = moved
        chosen += best
        reached = "matches" if here.divergence is None else f"reaches {describe(here.divergence)}"
        names = " + ".join(m.entry.id for m in best)
        say(f"equiv diagnose {label}: + {names}: {reached}")
    result.members = chosen
    if chosen:
        if here.divergence is not None:
            # the search ranks against the plain reference's tolerance; the variant's own (its
            # Adam normalising other rounding, its float32 compute) may be wider: the proof
            # decides
            say(f"equiv diagnose {label}: no entry moves the search on; proving the set as is")
        _prove(cell, base, result, divergence, say, label)
    if result.outcome != "found":
        if (
            chosen
            and here.rank() > start.rank()
            and (
                (here.step, here.key) != (start.step, start.key)
                or here.ratio * PARTLY <= start.ratio
            )
        ):
            result.outcome, result.reached = "partly", here.divergence
        else:  # moved too little to name anything
            result.outcome, result.members = "not found", []
    result.seconds = time.perf_counter() - started
    say(f"equiv diagnose {label}: {result.outcome} in {result.seconds:.1f} s")
    return result


def phase_limit(localization) -> str | None:
    """The phase of a one-step bug a localization found (step 0 is one by construction; a later
    step where teacher forcing still disagrees), or None: no entry acting after it can be
    the cause."""
    if localization is None:
        return None
    if localization.step == 0:
        return localization.phase
    if localization.forced and localization.forced_divergence is not None:
        return localization.forced_divergence.phase
    return None


def _compatible(members) -> bool:
    """Two entries that set no key twice."""
    keys = [k for m in members for k in m.overrides]
    return len(keys) == len(set(keys))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _merged(config: dict, base: dict, members: list[Member]) -> dict:
    out = {**config, **base}
    for m in members:
        out.update(m.overrides)
    return out


def _key(variant: dict[str, Any]) -> tuple:
    return tuple(sorted(variant.items()))


_ANY = object()


def _candidates(cell, config, chosen, limit, last_resort) -> list[Member]:
    taken = {m.entry.id for m in chosen}
    taken_keys = {k for m in chosen for k in m.overrides}
    bound = PHASE_ORDER.get(limit, len(PHASES)) if limit else len(PHASES)
    pool = []
    for entry in ENTRIES:
        if entry.id in taken or entry.last_resort != last_resort:
            continue
        if not entry.applies(config, cell.state.dtype, cell.spec.param_names):
            continue
        overrides = entry.overrides(config)
        if set(overrides) & taken_keys:  # another value of a key already explained
            continue
        if not entry.last_resort and PHASES.index(entry.phase) > bound:
            continue
        # what the variant changes of the case's own config (the set so far and this entry)
        changed = {
            k: v for k, v in {**config, **overrides}.items() if cell.spec.config.get(k, _ANY) != v
        }
        if variant_refusal(cell.spec, _key(changed)):
            continue
        pool.append(Member(entry, overrides))
    # the cell's own framework's defaults first; the catalogue's order breaks ties
    pool.sort(key=lambda m: not m.entry.native_to(cell.backend.id))
    return pool


def _try(cell: FailingCell, base: dict, chosen: list[Member], moves: list[list[Member]]) -> list:
    """Each move's (a list of entries to add) position, best first: one lockstep run of the
    implementation per batch of moves that fits ``MAX_ROUND_BYTES``."""
    ranked = []
    for batch in _batches(cell, moves):
        checks = [cell.make_check(_key(_merged({}, base, [*chosen, *m])), False) for m in batch]
        _lockstep(cell, checks)
        ranked += [(m, position(c.comparison)) for m, c in zip(batch, checks, strict=True)]
    # a stable sort: among equal positions the earlier (own framework's) move wins
    ranked.sort(key=lambda pair: pair[1].rank(), reverse=True)
    return ranked


def _lockstep(cell: FailingCell, checks: list[Check], to_the_end: bool = False) -> None:
    """The implementation, once, against every check; a check stops at its first divergence
    (where it is ranked), and the run stops when every check has. ``to_the_end``: one check
    that runs every step whatever it finds (a proof's)."""
    trainer = check_trainer(
        cell.backend.build_trainer(cell.spec, cell.state, cell.module), cell.module.__name__
    )
    for check in checks:
        check.comparison.leave_out(cell.not_observed)
        check.comparison.observe(cell.derived)
    for t in range(cell.steps):
        trainer.run_step()
        cell.backend.synchronize()
        record = trainer.record()
        for check in checks:
            if not check.active:
                continue
            check.reference.run_step()
            go_on = check.comparison.add(t, record, check.reference.record())
            check.active = go_on and (to_the_end or check.comparison.first_divergence is None)
        if not any(c.active for c in checks):
            return


def _batches(cell: FailingCell, items: list) -> list[list]:
    """``items`` in groups whose float64 references fit ``MAX_ROUND_BYTES`` side by side."""
    params = 8 * sum(np.size(v) for v in cell.state.params.values())  # float64 bytes
    size = max(1, MAX_ROUND_BYTES // max(1, params * REFERENCE_BYTES_PER_PARAMETER_BYTE))
    return [items[i : i + size] for i in range(0, len(items), size)]


def _prove(cell, base, result: Diagnosis, divergence: Divergence, say, label) -> None:
    """The declared explanation's proof, with each variant's own calibration: the whole set
    matches, and each member is needed. A member without which the rest still matches is
    dropped, and the rest proven again."""
    while result.members:
        whole = cell.make_check(_key(_merged({}, base, result.members)), True)
        _lockstep(cell, [whole], to_the_end=True)
        matched = whole.comparison
        if matched.first_divergence is not None or matched.compared <= divergence.step:
            result.proof = "with its own calibration the merged variant does not match: " + (
                describe(matched.first_divergence) if matched.first_divergence else ""
            )
            return
        less = [
            cell.make_check(
                _key(_merged({}, base, [m for m in result.members if m is not one])), True
            )
            for one in result.members
        ]
        for batch in _batches(cell, less):
            _lockstep(cell, batch)
        unneeded = [
            m
            for m, c in zip(result.members, less, strict=True)
            if c.comparison.first_divergence is None
        ]
        if unneeded:
            dropped = unneeded[-1]
            say(f"equiv diagnose {label}: {dropped.entry.id} is not needed; proving the rest")
            result.members = [m for m in result.members if m is not dropped]
            continue
        for m, c in zip(result.members, less, strict=True):
            m.without = c.comparison.first_divergence
        stopped = (
            f", up to {matched.stopped_by} at step {matched.stopped_at}"
            if matched.stopped_at is not None
            else ""
        )
        result.outcome = "found"
        result.proof = (
            f"Proof: the reference variant {_jsonable(result.variant)} matches (max "
            f"{max(matched.max_ratio.values(), default=0):.2g} of tolerance over "
            f"{matched.compared} steps{stopped}) where the reference does not; without any one "
            "member it diverges"
        )
        return
