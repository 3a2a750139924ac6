"""Backends come from the ``equiv.backends`` entry-point group, and a broken plugin cannot break
the others.

A toy distribution is "installed" into a temporary folder (a ``*.dist-info`` with METADATA and
entry_points.txt, next to its modules) and put on PYTHONPATH, as pip would leave it in
site-packages. It registers one working backend and five broken ones: a module that raises on
import, an adapter that lacks the methods, an adapter class that cannot be instantiated, one
that reuses the built-in id ``numpy``, and one whose availability() raises. ``equiv list`` and
``equiv run`` then run in subprocesses, as a user would run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from equiv.backends.registry import REQUIRED_METHODS, BrokenBackend, _load_group

ENTRY_POINTS = """\
[equiv.backends]
toy_good = toy_good:backends
toy_import = toy_broken_import:backends
toy_methods = toy_broken_methods:backends
toy_abstract = toy_broken_abstract:backends
toy_clash = toy_broken_clash:backends
toy_avail = toy_broken_avail:backends
"""

MODULES = {
    "toy_good.py": '''
from equiv.backends.numpy import NumpyBackend


class ToyNumpy(NumpyBackend):
    """A working third-party backend: the reference under another id."""

    id = "toy.numpy"
    framework = "toy"


def backends():
    return [ToyNumpy()]
''',
    "toy_broken_import.py": """
raise ImportError("toy_broken_import needs the toyframework package, which is not installed")
""",
    "toy_broken_methods.py": '''
class HalfAdapter:
    """Duck-typed, and only half of the duck."""

    id = "toy.half"

    def to_native(self, array):
        return array


def backends():
    return [HalfAdapter()]
''',
    "toy_broken_abstract.py": """
from equiv.contract.backend import Backend


class NoConversions(Backend):
    id = "toy.abstract"


def backends():
    return [NoConversions()]  # TypeError: abstract methods to_native, to_numpy
""",
    "toy_broken_clash.py": """
from equiv.backends.numpy import NumpyBackend


class Impostor(NumpyBackend):
    id = "numpy"

    def to_native(self, array):
        raise AssertionError("the impostor must never run")


def backends():
    return [Impostor()]
""",
    "toy_broken_avail.py": """
from equiv.backends.numpy import NumpyBackend


class Moody(NumpyBackend):
    id = "toy.moody"

    def availability(self):
        raise RuntimeError("cannot tell")


def backends():
    return [Moody()]
""",
}


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    info = site / "toy_broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy_broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    for name, text in MODULES.items():
        (site / name).write_text(text.lstrip())
    return site


def equiv(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "equiv", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def listed(toy_site) -> dict[str, dict]:
    out = equiv(toy_site, "list", "--json")
    assert out.returncode == 0, out.stderr
    return {b["id"]: b for b in json.loads(out.stdout)["backends"]}


def test_a_working_plugin_backend_is_listed_as_available(listed):
    assert listed["toy.numpy"]["available"], listed["toy.numpy"]


def test_the_built_in_backends_are_untouched(listed):
    assert listed["numpy"]["available"] and listed["numpy"]["framework"] == "numpy"
    assert "torch.eager" in listed


@pytest.mark.parametrize(
    "backend_id, words",
    [
        (
            "toy_import",
            ["'toy_import' (toy_broken 0.1) failed to load", "ImportError", "toyframework"],
        ),
        ("toy.half", ["HalfAdapter is not an equiv.contract.backend.Backend", "lacks", "to_numpy"]),
        ("toy_abstract", ["failed to load", "NoConversions", "abstract"]),
        ("numpy@toy_clash", ["registers backend id 'numpy'", "already registered", "ignored"]),
        ("toy.moody", ["availability() raised", "cannot tell"]),
    ],
)
def test_a_broken_plugin_is_an_unavailable_backend_with_its_reason(listed, backend_id, words):
    entry = listed[backend_id]
    assert not entry["available"]
    for word in words:
        assert word in entry["reason"], entry["reason"]


def test_the_text_listing_survives_and_shows_the_reasons(toy_site):
    out = equiv(toy_site, "list")
    assert out.returncode == 0, out.stderr
    assert "toy.numpy" in out.stdout
    assert "toy_import" in out.stdout and "unavailable: plugin 'toy_import'" in out.stdout


def test_a_run_goes_on_beside_broken_plugins(toy_site, tmp_path):
    args = ["run", "--case", "two_layer_mlp", "--steps", "2", "--bench-rounds", "0"]
    for backend in ("numpy", "toy.numpy", "toy_import", "numpy@toy_clash", "toy.moody"):
        args += ["--backend", backend]
    out = equiv(toy_site, *args, "--out", str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    cells = {
        (c["backend"], c["dtype"]): c
        for c in json.loads((tmp_path / "parity.json").read_text())["cells"]
    }
    for dtype in ("float64", "float32"):
        assert cells[("numpy", dtype)]["status"] == "pass"  # the built-in, not the impostor
        assert cells[("toy.numpy", dtype)]["status"] == "pass"
        for broken in ("toy_import", "numpy@toy_clash", "toy.moody"):
            cell = cells[(broken, dtype)]
            assert cell["status"] == "skip" and cell["reason"], cell


def test_a_run_of_only_the_built_ins_is_unaffected(toy_site, tmp_path):
    out = equiv(
        toy_site, "run", "--backend", "numpy", "--steps", "2", "--bench-rounds", "0",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    cells = json.loads((tmp_path / "parity.json").read_text())["cells"]
    # a case whose reference is a port (the example's lstm_regressor) has no numpy cell to run
    ported = {c["id"] for c in cells if "the reference is the port" in (c.get("reason") or "")}
    assert all(i.startswith("lstm_regressor-") for i in ported)
    assert cells and {c["status"] for c in cells if c["id"] not in ported} == {"pass"}


# -- the loader itself, in-process -------------------------------------------------------------


def test_a_plugin_that_exits_on_import_is_reported():
    def loader():
        raise SystemExit(3)

    (broken,) = _load_group("quitter", loader)
    assert isinstance(broken, BrokenBackend) and "SystemExit" in broken.availability()


def test_a_plugin_whose_backends_is_not_a_list_is_reported():
    (broken,) = _load_group("odd", lambda: 42)
    assert isinstance(broken, BrokenBackend) and "TypeError" in broken.availability()


def test_an_adapter_without_an_id_gets_a_stand_in_id():
    from equiv.backends.numpy import NumpyBackend

    class Nameless(NumpyBackend):
        id = ""

    (broken,) = _load_group("anon", lambda: [Nameless()])
    assert broken.id == "anon[0]" and "has no id" in broken.availability()


def test_availability_returning_a_non_string_makes_the_backend_unavailable():
    from equiv.backends.numpy import NumpyBackend

    class Chatty(NumpyBackend):
        id = "chatty"

        def availability(self):
            return 0

    (backend,) = _load_group("chatty", lambda: [Chatty()])
    assert "returned 0" in backend.availability()
    assert backend.describe()["available"] is False


# -- the contract, stated once (equiv.contract.trainer)
# ------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-a-backend.md"


@pytest.mark.parametrize("method", REQUIRED_METHODS)
def test_the_registry_refuses_an_adapter_lacking_any_method_the_harness_calls(method):
    from equiv.backends.numpy import NumpyBackend

    class Lacking(NumpyBackend):
        id = f"lacks.{method}"

    setattr(Lacking, method, None)
    (broken,) = _load_group("lacking", lambda: [Lacking()])
    assert isinstance(broken, BrokenBackend)
    assert f"lacks {method}" in broken.availability()


def test_the_registry_checks_exactly_what_the_contract_says_the_harness_calls():
    from equiv.contract.trainer import HARNESS_CALLS

    assert REQUIRED_METHODS == HARNESS_CALLS
    from equiv.contract.backend import Backend

    assert all(callable(getattr(Backend, m, None)) for m in HARNESS_CALLS)


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The rows of the first table after ``heading``, each as its cells' text."""
    lines = markdown.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def member_name(cell: str) -> str:
    """`name(args)` -> name."""
    return cell.strip("`").split("(", 1)[0]


def test_the_docs_member_table_lists_every_method_the_harness_calls():
    from equiv.contract.trainer import HARNESS_CALLS

    rows = table_rows(DOC.read_text(), "What each part must do")
    methods = {member_name(row[0]) for row in rows if "(" in row[0]}
    assert methods == set(HARNESS_CALLS)


def all_backend_classes() -> list[type]:
    from equiv.backends.registry import all_backends

    return [type(b) for b in all_backends().values() if not isinstance(b, BrokenBackend)]


def test_every_declared_helper_is_a_documented_method():
    import inspect

    from equiv.contract.trainer import declared_helpers

    for cls in all_backend_classes():
        for name in declared_helpers(cls):
            method = getattr(cls, name, None)
            assert callable(method), f"{cls.__name__}.case_helpers names {name}, not a method"
            # inspect.getdoc: an override inherits the docstring of the method it overrides
            assert inspect.getdoc(method), f"{cls.__name__}.{name} has no docstring"


def test_the_docs_helper_table_lists_exactly_what_the_backends_declare():
    """Each helper with the backend ids that declare it: `torch.*` in the docs stands for
    every id of the torch family."""
    import fnmatch

    from equiv.backends.registry import all_backends
    from equiv.contract.trainer import declared_helpers

    declared: dict[str, set[str]] = {}
    for backend in all_backends().values():
        if not isinstance(backend, BrokenBackend):
            for name in declared_helpers(backend):
                declared.setdefault(name, set()).add(backend.id)
    documented: dict[str, set[str]] = {}
    for row in table_rows(DOC.read_text(), "### Helpers for case code"):
        patterns = [p.strip("` ") for p in row[1].split(",")]
        ids = {b for b in all_backends() for p in patterns if fnmatch.fnmatchcase(b, p)}
        documented[member_name(row[0])] = ids - {b for b in ids if "@" in b}
    assert documented == declared


def test_the_helpers_the_issue_names_are_declared():
    """The helpers case code called before they were declared anywhere (issue 14)."""
    from equiv.backends.keras import KerasBackend
    from equiv.backends.tensorflow import TFV1Graph
    from equiv.backends.torch import TorchBackend
    from equiv.contract.trainer import declared_helpers

    assert {"linear_weight", "canonical_kernel"} <= set(declared_helpers(TorchBackend))
    assert {"new_graph", "session"} <= set(declared_helpers(TFV1Graph))
    assert {"floatx", "value_and_grad", "value_and_grad_fn"} <= set(declared_helpers(KerasBackend))
    jax = pytest.importorskip("equiv_jax.backend")
    assert "track" in declared_helpers(jax.JaxBackend)


NOT_A_TRAINER = """
def build(state, backend):
    return {"w1": state.params["w1"]}  # a dict of arrays, not something with run_step
"""


def test_a_build_returning_a_non_trainer_is_an_error_naming_the_module(tmp_path, monkeypatch):
    from equiv.backends.numpy import NumpyBackend
    from equiv.backends.registry import all_backends
    from equiv.contract.backend import Backend
    from equiv.contract.records import Cell
    from equiv.running.runner import RunOptions, run_cell

    (tmp_path / "not_a_trainer_impl.py").write_text(NOT_A_TRAINER)
    monkeypatch.syspath_prepend(str(tmp_path))

    class Builds(NumpyBackend):
        """Calls the module's build, as every framework backend does."""

        id = "toy.builds"
        build_trainer = Backend.build_trainer

        def implementation_module(self, spec):
            return "not_a_trainer_impl"

    class Overrides(Builds):
        """An adapter's own build_trainer: the runner checks its result too."""

        id = "toy.overrides"

        def build_trainer(self, spec, state, module):
            return module.build(state, self)

    for backend in (Builds(), Overrides()):
        monkeypatch.setitem(all_backends(), backend.id, backend)
        cell = Cell("two_layer_mlp", backend.id, "float64")
        result = run_cell(cell, RunOptions(steps=2, bench_rounds=0, check_reproducible=False))
        assert result.status == "error", result
        assert result.reason.startswith("NotATrainer: not_a_trainer_impl.build(state, backend)")
        assert "returned dict" in result.reason and "lacks run_step, record" in result.reason


def test_a_trainer_satisfies_the_protocol():
    from equiv.contract.case import get_case
    from equiv.contract.trainer import Trainer, check_trainer
    from equiv.reference.trainer import ReferenceTrainer

    spec = get_case("two_layer_mlp")
    trainer = ReferenceTrainer(spec, spec.make_state(0, "float64"))
    assert isinstance(trainer, Trainer)
    assert check_trainer(trainer, "x") is trainer
