"""Case specs and their discovery.

A case is a framework-neutral training problem. Its folder in ``cases/`` holds ``spec.py``
(defining ``SPEC``), ``reference.py`` (numpy, hand-written backward) and one implementation
file per framework, with the same file names in every case folder.
"""

from __future__ import annotations

import fnmatch
import importlib
import pkgutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from equiv.records import CaseState

Draw = Callable[[np.random.Generator, dict[str, Any]], tuple[dict, dict]]


@dataclass(frozen=True)
class Explanation:
    """A declared, documented semantic difference of some backends from the reference.

    ``variant`` overrides the reference's config so that it reproduces the backends' semantics;
    the harness proves the explanation by checking that the variant matches where the original
    reference does not (verdict ``explained``). A case declares the differences of its own
    program (``CaseSpec.explanations``), a backend those of its framework that show in every
    case (``Backend.explanations``); where both apply, their variants are combined.

    The variant key ``compute_dtype`` declares that the backend computes a cell of a wider
    dtype at that narrower precision: the variant is then held to the tolerance the same
    policy derives for that precision (``equiv.tolerance``), so such a cell is explained as
    "correct to float32 precision", never as float64-exact.
    """

    backends: str  # fnmatch pattern over backend ids, e.g. "keras.*"
    reason: str
    variant: dict[str, Any]
    cases: str = "*"  # fnmatch pattern over case names
    dtypes: str = "*"  # fnmatch pattern over cell dtypes

    def applies_to(self, backend_id: str, case: str = "", dtype: str = "") -> bool:
        return (
            fnmatch.fnmatchcase(backend_id, self.backends)
            and (not case or fnmatch.fnmatchcase(case, self.cases))
            and (not dtype or fnmatch.fnmatchcase(dtype, self.dtypes))
        )

    def variant_key(self) -> tuple:
        return tuple(sorted(self.variant.items()))


def combine_explanations(found: list[Explanation]) -> Explanation | None:
    """One explanation for a cell from all that apply: reasons joined, variants merged (a key
    declared twice with different values is a contradiction, and an error)."""
    if not found:
        return None
    if len(found) == 1:
        return found[0]
    variant: dict[str, Any] = {}
    for item in found:
        for key, value in item.variant.items():
            if variant.get(key, value) != value:
                raise ValueError(f"explanations disagree on {key!r}: {variant[key]!r}, {value!r}")
            variant[key] = value
    return Explanation(
        backends=found[0].backends,
        reason="; and ".join(item.reason for item in found),
        variant=variant,
    )


@dataclass(frozen=True)
class CaseSpec:
    name: str
    title: str
    seed_source: str
    summary: str
    default_steps: int
    config: dict[str, Any]
    param_names: tuple[str, ...]
    draw: Draw
    branching: bool = False
    flops_per_step: Callable[[dict[str, Any]], int] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    explanations: tuple[Explanation, ...] = ()
    package: str = "cases"

    def explanations_for(self, backend_id: str, dtype: str = "") -> list[Explanation]:
        """Every declaration of the case that applies: each is one difference, and a cell
        with several is explained only by all of them together (``combine_explanations``)."""
        return [e for e in self.explanations if e.applies_to(backend_id, self.name, dtype)]

    def module_name(self, file: str) -> str:
        return f"{self.package}.{self.name}.{file}"

    def make_state(self, seed: int, dtype: str, variant: tuple = ()) -> CaseState:
        """Draw data and initial parameters in float64 from one generator, then cast.

        The generator depends only on (seed, case name), so every backend and dtype of a case
        starts from the same numbers; no framework RNG is ever involved.
        """
        rng = np.random.default_rng(case_seed_sequence(seed, self.name))
        data, params = self.draw(rng, self.config)
        state = CaseState(
            data={k: np.asarray(v, dtype=np.float64) for k, v in data.items()},
            params={k: np.asarray(v, dtype=np.float64) for k, v in params.items()},
            config={**self.config, **dict(variant)},
            dtype="float64",
        )
        if tuple(state.params) != self.param_names:
            raise ValueError(f"case {self.name}: draw returned params {tuple(state.params)}")
        return state.astype(dtype)


def case_seed_sequence(seed: int, case_name: str) -> np.random.SeedSequence:
    """(seed, case) -> SeedSequence; crc32 keeps the case part stable across Python runs."""
    return np.random.SeedSequence([int(seed), zlib.crc32(case_name.encode())])


@cache
def all_cases() -> dict[str, CaseSpec]:
    """The built-in cases: every sub-package of ``cases`` that defines ``spec.SPEC``."""
    import cases

    found: dict[str, CaseSpec] = {}
    for info in sorted(pkgutil.iter_modules(cases.__path__), key=lambda m: m.name):
        if not info.ispkg:
            continue
        spec = importlib.import_module(f"cases.{info.name}.spec").SPEC
        found[spec.name] = spec
    return found


def get_case(name: str) -> CaseSpec:
    cases = all_cases()
    if name not in cases:
        raise KeyError(f"unknown case {name!r}; valid cases: {', '.join(cases)}")
    return cases[name]
