"""Case specs and their discovery.

A case is a framework-neutral training problem. Its folder holds ``spec.py`` (defining
``SPEC``), ``reference.py`` (numpy, hand-written backward) and one implementation file per
framework, with the same file names in every case folder. equiv's own cases are the folders of
its ``cases`` package; a case package of anyone's registers its ``CaseSpec``s under the
``equiv.cases`` entry-point group (``CaseSpec.package`` names the package that holds the case
folders). A package that fails to load, an entry that is not a CaseSpec, or a name already
taken becomes an ``UnavailableCase`` with the reason, as a broken backend plugin does.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import pkgutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from equiv.contract.plugins import ordered_entry_points
from equiv.contract.records import CaseState

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
    policy derives for that precision (``equiv.tolerance.policy``), so such a cell is explained as
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
    #: forward activations every step reports, by layer name in execution order
    #: (``StepRecord.activations``): a failing cell names the first layer out of tolerance
    activation_names: tuple[str, ...] = ()
    #: forward activations compared only where the reference is a port (``reference_port``,
    #: ``--reference``): ports built with ``equiv.support.torch_port``/``keras_port`` record
    #: every layer of their layout, and a numpy reference that does not report them is not
    #: asked to
    port_activations: tuple[str, ...] = ()
    #: non-trainable state every step reports after its update (``StepRecord.state``)
    state_names: tuple[str, ...] = ()
    #: evaluation-mode outputs every step reports after its update (``StepRecord.evaluation``)
    evaluation_names: tuple[str, ...] = ()
    #: (activation, L): the loss is L-Lipschitz in the largest absolute change of that
    #: reported activation (softmax cross-entropy of the logits: L = 2, as |d CE_i| <=
    #: ||p_i - y_i||_1 max|dz_i|): the loss's tolerance is then at least L times that
    #: activation's (``equiv.tolerance.policy``). A scalar's one calibration draw can cancel where
    # an
    #: implementation's does not; the activation it is computed from is compared as well
    loss_from: tuple[str, float] | None = None
    #: the float64 calibration's injected gradient rounding per step (``equiv.tolerance.policy``):
    #: "ulp", one ulp of each gradient array's scale, or "measured", as many ulps as the
    #: float32 shadow's gradients are off at step 0 (the rounding of one gradient computation
    #: of this network), for deep networks whose training is chaotic (resnet18)
    gradient_rounding: str = "ulp"
    #: backend id patterns (fnmatch) whose cells of this case the pytest matrix marks
    #: ``slow``: left out of the default test run, run by ``pytest -m slow`` (a compile of
    #: minutes per cell); ``equiv run`` runs them as any other
    slow_backends: tuple[str, ...] = ()
    #: the pytest matrix's most steps for this case (None: the matrix's own count); a case
    #: whose cell costs seconds a step keeps CI within its budget with it (documented there)
    matrix_steps: int | None = None
    #: a case with no numpy reference names the backend whose port is its ground truth
    #: (``"torch.eager"``): run in float64, its gradients applied by equiv's own update rule
    #: (``equiv.backends.reference_port``); ``against`` sets it for any case (``--reference``)
    reference_port: str | None = None

    def against(self, port: str | None) -> CaseSpec:
        """This case with ``port`` (a backend id) as its reference instead of its numpy one;
        ``None``: as it is."""
        from dataclasses import replace

        return (
            self
            if port is None or port == self.reference_port
            else replace(self, reference_port=port)
        )

    def compared_activations(self) -> tuple[str, ...]:
        """The activations a step is compared on: ``activation_names``, and under a port
        reference ``port_activations`` too."""
        extra = self.port_activations if self.reference_port is not None else ()
        return (*self.activation_names, *(n for n in extra if n not in self.activation_names))

    def slow_on(self, backend_id: str) -> bool:
        """Whether ``slow_backends`` names this backend."""
        return any(fnmatch.fnmatchcase(backend_id, p) for p in self.slow_backends)

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


#: the entry-point group of case packages: an entry point's object is a CaseSpec, an iterable
#: of CaseSpecs, or a callable returning either
GROUP = "equiv.cases"
BUILT_IN = "built-in"


@dataclass(frozen=True)
class UnavailableCase:
    """A case package (or one of its entries) that could not be loaded: listed with the
    reason, and its cells are skipped with it; it never breaks the other cases."""

    name: str
    reason: str
    origin: str


@dataclass
class CaseCatalog:
    """Every case equiv found: the usable ones, where each came from, and the broken ones."""

    cases: dict[str, CaseSpec]
    origins: dict[str, str]
    unavailable: dict[str, UnavailableCase]

    def names(self) -> list[str]:
        """Every selectable name: usable cases, then the unavailable (their cells skip)."""
        return list(self.cases) + [n for n in self.unavailable if n not in self.cases]


def _builtin_cases() -> dict[str, CaseSpec]:
    """Every sub-package of ``cases`` that defines ``spec.SPEC``. A broken one raises: it is
    a bug of equiv itself, not a plugin to list and step around."""
    import cases

    found: dict[str, CaseSpec] = {}
    for info in sorted(pkgutil.iter_modules(cases.__path__), key=lambda m: m.name):
        if not info.ispkg:
            continue
        spec = importlib.import_module(f"cases.{info.name}.spec").SPEC
        found[spec.name] = spec
    return found


def _entry_items(load: Callable[[], Any]) -> list[Any]:
    made = load()
    if callable(made) and not isinstance(made, CaseSpec):
        made = made()
    if isinstance(made, CaseSpec):
        return [made]
    if isinstance(made, str | bytes) or not hasattr(made, "__iter__"):
        raise TypeError(f"{type(made).__name__} is neither a CaseSpec nor an iterable of them")
    return list(made)


def _problem(item: Any) -> str | None:
    """Why ``item`` cannot serve as a plugin's case, or None."""
    if not isinstance(item, CaseSpec):
        return f"{type(item).__name__} {item!r:.60} is not an equiv.contract.case.CaseSpec"
    if not isinstance(item.name, str) or not item.name:
        return "a CaseSpec without a name"
    if item.reference_port is not None:
        return None  # its ground truth is a port; checked when a cell runs
    reference = item.module_name("reference")
    try:
        found = importlib.util.find_spec(reference)
    except ModuleNotFoundError as exc:
        if not (exc.name and reference.startswith(exc.name)):  # it imports something missing
            return f"case {item.name!r}: importing its package failed: {exc!r}"
        found = None
    except (Exception, SystemExit) as exc:  # the case's package fails to import
        return f"case {item.name!r}: importing its package failed: {exc!r}"
    if found is None:
        return (
            f"case {item.name!r}: it has neither a numpy reference ({reference.replace('.', '/')}"
            f".py is missing; CaseSpec.package is {item.package!r}: the package that holds the "
            f"folder {item.name}/) nor a reference port (CaseSpec.reference_port)"
        )
    return None


def discover(
    builtins: Callable[[], dict[str, CaseSpec]] = _builtin_cases,
    plugins: Callable[[], list[tuple[str, Callable[[], Any], str]]] | None = None,
) -> CaseCatalog:
    """The built-in cases, then each ``equiv.cases`` entry point's (``plugins`` gives them as
    (entry point name, loader, origin), in ``equiv.contract.plugins.ordered_entry_points``'s order).
    A name taken already (a built-in's, or an earlier plugin's) stays with its first owner;
    the later one is listed as ``<name>@<entry point>``, unavailable, with the reason."""
    catalog = CaseCatalog(cases={}, origins={}, unavailable={})
    for name, spec in builtins().items():
        catalog.cases[name] = spec
        catalog.origins[name] = BUILT_IN

    def unavailable(name: str, reason: str, origin: str) -> None:
        alias, n = name, 2
        while alias in catalog.cases or alias in catalog.unavailable:
            alias, n = f"{name}#{n}", n + 1
        catalog.unavailable[alias] = UnavailableCase(alias, reason, origin)
        catalog.origins[alias] = origin

    for ep_name, load, origin in (plugins or _plugin_loaders)():
        try:
            items = _entry_items(load)
        except (Exception, SystemExit) as exc:  # a broken package must not break discovery
            unavailable(ep_name, f"{origin} failed to load: {exc!r}", origin)
            continue
        for index, item in enumerate(items):
            name = getattr(item, "name", None)
            if isinstance(item, CaseSpec) and name in catalog.cases:
                unavailable(
                    f"{name}@{ep_name}",
                    f"{origin} registers case {name!r}, which {catalog.origins[name]} already "
                    "registered; this one is ignored",
                    origin,
                )
            elif problem := _problem(item):
                label = name if isinstance(name, str) and name else f"{ep_name}[{index}]"
                unavailable(label, f"{origin}: {problem}", origin)
            else:
                catalog.cases[name] = item
                catalog.origins[name] = origin
    return catalog


def _plugin_loaders() -> list[tuple[str, Callable[[], Any], str]]:
    return [(ep.name, ep.load, origin) for ep, _, origin in ordered_entry_points(GROUP)]


@cache
def case_catalog() -> CaseCatalog:
    return discover()


def all_cases() -> dict[str, CaseSpec]:
    """Every usable case: the built-ins, then those of installed case packages."""
    return case_catalog().cases


def builtin_cases() -> dict[str, CaseSpec]:
    """equiv's own cases only: for tests of a backend's own behaviour (trace counts, speed),
    which an installed case package's cells (maybe without that backend's code) must not
    widen."""
    catalog = case_catalog()
    return {n: s for n, s in catalog.cases.items() if catalog.origins[n] == BUILT_IN}


def unavailable_cases() -> dict[str, UnavailableCase]:
    """Case packages (or entries) that could not be loaded, by the name they are listed as."""
    return case_catalog().unavailable


def case_origin(name: str) -> str:
    """``"built-in"`` or ``"plugin 'x' (dist version)"``."""
    return case_catalog().origins[name]


def get_case(name: str) -> CaseSpec:
    catalog = case_catalog()
    if name in catalog.unavailable:
        raise KeyError(f"case {name!r} is unavailable: {catalog.unavailable[name].reason}")
    if name not in catalog.cases:
        raise KeyError(f"unknown case {name!r}; valid cases: {', '.join(catalog.cases)}")
    return catalog.cases[name]
