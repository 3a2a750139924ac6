"""Two or more ports of one model checked in a plain pytest function: no case package, no
plugin, no numpy reference (``equiv.testing.assert_train_alike``).

The function makes the case the harness needs from its arguments (a ``CaseSpec`` whose
implementation modules live only in memory, under a package name of their own), registers it
for the duration of the check, and runs each cell as ``equiv run`` would: one port is the
reference, in float64 (``equiv.backends.reference_port``), every other port and mode is held
to the tolerance the same policy derives. A failing cell fails the test with the table of
verdicts, its first divergence and, for a forward bug, its first wrong layer.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from equiv.contract.case import CaseSpec, Explanation, case_catalog
from equiv.contract.records import Cell, CellResult

#: the verdicts that let the test pass
ACCEPTED = ("pass", "explained")


def assert_train_alike(
    name: str,
    *,
    ports: Mapping[str, Callable[..., Any]],
    draw: Callable[[np.random.Generator, dict[str, Any]], tuple[dict, dict]],
    config: Mapping[str, Any],
    param_names: Sequence[str],
    reference: str,
    backends: Sequence[str] | None = None,
    dtypes: Sequence[str] = ("float64", "float32"),
    steps: int = 5,
    seed: int = 0,
    activation_names: Sequence[str] = (),
    state_names: Sequence[str] = (),
    explanations: Sequence[Explanation] = (),
) -> list[CellResult]:
    """Train each port ``steps`` steps from one canonical state and assert that every cell
    agrees with ``reference`` (a backend id whose port is the ground truth) within the derived
    tolerance: pass, or explained by one of ``explanations``.

    ``ports``: the framework's implementation file name (``"torch_impl"``, ``"keras_impl"``,
    ``"jax_impl"``: a backend's ``impl_file``) -> its ``build(state, backend)``. ``backends``:
    the cells' backend ids (default: ``reference`` and each other port's eager backend that
    runs in this process). ``draw(rng, config) -> (data, params)`` draws the canonical state.
    Returns the cells' results (for a test that asserts more)."""
    from equiv.backends.registry import all_backends
    from equiv.running.runner import RunOptions, run_cell

    known = all_backends()
    if reference not in known:
        raise ValueError(f"{name}: reference {reference!r} is not a backend")
    if backends is None:
        backends = _default_backends(ports, reference, known)
    missing = sorted({known[b].impl_file for b in backends if b in known} - set(ports))
    if missing or any(b not in known for b in backends):
        raise ValueError(
            f"{name}: backends {list(backends)} need ports {missing or '(unknown backend)'}; "
            f"given {sorted(ports)}"
        )
    spec = CaseSpec(
        name=name,
        title=name,
        seed_source="(a user's model)",
        summary=f"{name}: ports of one model, checked by equiv.testing.assert_train_alike",
        default_steps=steps,
        config=dict(config),
        param_names=tuple(param_names),
        draw=draw,
        activation_names=tuple(activation_names),
        state_names=tuple(state_names),
        explanations=tuple(explanations),
        package=f"_equiv_alike_{name}",
        reference_port=reference,
    )
    options = RunOptions.verdict_only(steps=steps, seed=seed)
    with _registered(spec, ports):
        results = [
            run_cell(Cell(name, backend, dtype), options, benchmark=False)
            for dtype in dtypes
            for backend in backends
        ]
    bad = [r for r in results if r.status not in ACCEPTED]
    if bad:
        raise AssertionError(_table(name, results))
    return results


def _default_backends(ports, reference, known) -> list[str]:
    """The reference, then each other port's backends that run in this process, eager first."""
    chosen = [reference]
    for backend_id, backend in known.items():
        if backend_id in chosen or backend.impl_file not in ports:
            continue
        if backend.needs_own_process or backend.availability() is not None:
            continue
        chosen.append(backend_id)
    return chosen


@contextlib.contextmanager
def _registered(spec: CaseSpec, ports: Mapping[str, Callable[..., Any]]) -> Iterator[None]:
    """``spec`` in the case catalog and its ports as in-memory modules
    (``<package>.<name>.<impl_file>``, each with its ``build``), for the check's duration."""
    catalog = case_catalog()
    if spec.name in catalog.cases:
        raise ValueError(f"{spec.name}: a case of that name exists already; choose another")
    package = spec.package
    names = [package, f"{package}.{spec.name}"]
    modules = {n: types.ModuleType(n) for n in names}
    for module in modules.values():
        module.__path__ = []  # a package: its submodules are looked up in sys.modules
    for impl_file, build in ports.items():
        module = types.ModuleType(spec.module_name(impl_file))
        module.build = build
        module.__doc__ = getattr(build, "__doc__", None)
        modules[module.__name__] = module
    saved = {n: sys.modules.get(n) for n in modules}
    sys.modules.update(modules)
    catalog.cases[spec.name] = spec
    catalog.origins[spec.name] = "equiv.testing.assert_train_alike"
    try:
        yield
    finally:
        catalog.cases.pop(spec.name, None)
        catalog.origins.pop(spec.name, None)
        for n, old in saved.items():
            if old is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = old
        from equiv.tolerance import policy

        policy._calibrate_cached.cache_clear()  # keyed by case name: the name is free again


def _table(name: str, results: Sequence[CellResult]) -> str:
    lines = [f"{name}: ports do not train alike"]
    for r in results:
        where = ""
        if r.first_divergence is not None:
            d = r.first_divergence
            where = f" at step {d.step} {d.quantity} {d.name or ''}".rstrip()
        layer = (r.layers or {}).get("first_layer")
        if layer:
            where += f", first wrong layer {layer}"
        reason = f": {r.reason}" if r.reason and r.status not in ACCEPTED else ""
        lines.append(f"  {r.cell.id}: {r.status}{where}{reason}")
    return "\n".join(lines)
