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
    reference does not (verdict ``explained``).
    """

    backends: str  # fnmatch pattern over backend ids, e.g. "keras.*"
    reason: str
    variant: dict[str, Any]

    def applies_to(self, backend_id: str) -> bool:
        return fnmatch.fnmatchcase(backend_id, self.backends)

    def variant_key(self) -> tuple:
        return tuple(sorted(self.variant.items()))


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

    def explanation_for(self, backend_id: str) -> Explanation | None:
        return next((e for e in self.explanations if e.applies_to(backend_id)), None)

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
