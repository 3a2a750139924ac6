"""The package's shape: subpackages in the pipeline's order, imports in one direction, no cycle.

Every import counts: at top level, inside functions and under ``TYPE_CHECKING``. A lower layer
that imports a higher one (a record that holds a verdict's type) is the start of a cycle, even
where Python happens to tolerate it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: equiv's subpackages, lowest first: each may import only itself and those before it
LAYERS = (
    "contract",
    "catalogue",
    "layouts",
    "reference",
    "backends",
    "support",
    "tolerance",
    "checking",
    "results",
    "report",
    "drift",
    "running",
    "quality",
    "cli",
)
#: top-level modules of the public API: the same module objects as the pipeline's own
FACADES = {
    "equiv.case": "equiv.contract.case",
    "equiv.records": "equiv.contract.records",
    "equiv.layers": "equiv.reference.layers",
    "equiv.optim": "equiv.reference.optim",
    "equiv.numerics": "equiv.reference.numerics",
    "equiv.batching": "equiv.reference.batching",
    "equiv.flops": "equiv.reference.flops",
    "equiv.registry": "equiv.backends.registry",
    "equiv.testing": "equiv.quality.conformance",
    "equiv.backends.base": "equiv.contract.backend",
}


def modules(root: Path, package: str = "equiv") -> dict[str, Path]:
    found = {}
    for path in (root / package).rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph(root: Path, package: str = "equiv") -> dict[str, set[str]]:
    """Module -> the package's modules it imports, wherever the import statement stands.
    ``from pkg import name`` is an edge to ``pkg.name`` where that is a module, else to ``pkg``."""
    known = modules(root, package)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if is_package else name.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in known else base)
            for target in targets:
                while target and target not in known:  # ``import equiv.x.y`` of a name inside
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at its end), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def layer_of(module: str, facades=FACADES) -> int:
    """The rank of a module: the package root lowest, the public facades highest."""
    if module in facades:
        return len(LAYERS) + 1
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # ``equiv`` itself: its version, nothing else
    if parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return len(LAYERS)  # ``__main__``, beside the command line


def upward_imports(graph: dict[str, set[str]], facades=FACADES) -> list[str]:
    return sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if layer_of(b, facades) > layer_of(a, facades)
    )


def test_equiv_has_no_import_cycle():
    assert find_cycle(import_graph(ROOT)) is None


def test_subpackages_import_only_earlier_layers():
    assert upward_imports(import_graph(ROOT)) == []


def test_every_module_is_in_a_layer_or_is_public_api():
    stray = [
        m
        for m in modules(ROOT)
        if m.count(".") == 1
        and m.split(".")[1] not in LAYERS
        and m not in FACADES
        and m != "equiv.__main__"
    ]
    assert stray == []


def test_each_subpackage_says_what_it_is():
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((ROOT / "equiv" / layer / "__init__.py").read_text()))
        assert doc and len(doc) > 40, layer


def test_package_root_imports_nothing_of_equiv():
    assert import_graph(ROOT)["equiv"] == set()


@pytest.mark.parametrize(("public", "real"), sorted(FACADES.items()))
def test_public_paths_are_the_real_modules(public, real):
    assert importlib.import_module(public) is importlib.import_module(real)


def test_public_api_page_lists_every_public_path():
    page = (ROOT / "docs" / "api.md").read_text()
    for public in [*FACADES, "equiv.contract", "equiv.support"]:
        assert f"`{public}`" in page, public


# -- the checks themselves catch what they are for (planted) --------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    root = _tree(
        tmp_path,
        {
            "equiv/__init__.py": "",
            "equiv/contract/__init__.py": "",
            "equiv/contract/records.py": "def f():\n    from equiv.contract import case\n",
            "equiv/contract/case.py": "from equiv.contract.records import f\n",
        },
    )
    cycle = find_cycle(import_graph(root))
    assert cycle and set(cycle) == {"equiv.contract.records", "equiv.contract.case"}


def test_an_upward_import_under_type_checking_is_found(tmp_path):
    root = _tree(
        tmp_path,
        {
            "equiv/__init__.py": "",
            "equiv/contract/__init__.py": "",
            "equiv/checking/__init__.py": "",
            "equiv/checking/verdict.py": "class ExplanationProof: ...\n",
            "equiv/contract/records.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from equiv.checking.verdict import ExplanationProof\n"
            ),
        },
    )
    assert upward_imports(import_graph(root)) == [
        "equiv.contract.records -> equiv.checking.verdict"
    ]


def test_relative_imports_are_resolved(tmp_path):
    root = _tree(
        tmp_path,
        {
            "equiv/__init__.py": "",
            "equiv/report/__init__.py": "",
            "equiv/report/model.py": "from . import plotdata\n",
            "equiv/report/plotdata.py": "from .model import x\n",
        },
    )
    assert find_cycle(import_graph(root)) is not None
