"""Cases come from installed packages too (the ``equiv.cases`` entry-point group), and a broken
case package cannot break the others.

``tests/fixtures/case_plugin`` is what pip would leave in site-packages for a small case
package: ``equiv_toycase`` (one case, ``toy_mlp``, with a reference, a torch and a JAX
implementation) and its dist-info. Three broken packages are "installed" beside it into a
temporary folder: one that fails to import, one whose entry is not a CaseSpec, and one that
registers a case under a built-in's name. ``equiv list``, ``equiv run`` and the pytest matrix
then run in subprocesses, as a user would run them; discovery itself is also tested in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from nested_pytest import TOY_SITE, child_environment

from equiv.contract.case import BUILT_IN, CaseSpec, discover, get_case

ROOT = Path(__file__).resolve().parents[1]
TOY_ORIGIN = "plugin 'toycase' (equiv-toycase 0.1)"

BROKEN_ENTRY_POINTS = """\
[equiv.cases]
toy_import = toycase_broken_import:cases
toy_notspec = toycase_not_spec:cases
toy_clash = toycase_clash:cases
"""

BROKEN_MODULES = {
    "toycase_broken_import.py": """
raise ImportError("toycase_broken_import needs the toyframework package, which is missing")
""",
    "toycase_not_spec.py": """
def cases():
    return [{"name": "a_dict_is_not_a_case"}]
""",
    "toycase_clash.py": """
from cases.two_layer_mlp.spec import SPEC


def cases():
    return SPEC  # a built-in's name (and spec), registered again
""",
}

#: the name each broken entry is listed under, and words its reason must contain
BROKEN = {
    "toy_import": ["plugin 'toy_import' (toycase-broken 0.1) failed to load", "toyframework"],
    "toy_notspec[0]": ["dict", "is not an equiv.contract.case.CaseSpec"],
    "two_layer_mlp@toy_clash": ["registers case 'two_layer_mlp'", "built-in", "ignored"],
}


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    info = site / "toycase_broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toycase-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(BROKEN_ENTRY_POINTS)
    for name, text in BROKEN_MODULES.items():
        (site / name).write_text(text.lstrip())
    return site


def environment(*sites: Path) -> dict[str, str]:
    env = child_environment(*sites)
    env.pop("EQUIV_CONFORMANCE_FULL", None)
    return env


def equiv(*args: str, sites: tuple[Path, ...] = (TOY_SITE,)) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "equiv", *args],
        capture_output=True,
        text=True,
        env=environment(*sites),
        timeout=600,
    )


@pytest.fixture(scope="module")
def listed(broken_site) -> dict[str, dict]:
    out = equiv("list", "--json", sites=(TOY_SITE, broken_site))
    assert out.returncode == 0, out.stderr
    return {c["name"]: c for c in json.loads(out.stdout)["cases"]}


# -- equiv list --------------------------------------------------------------------------------


def test_an_installed_case_is_listed_with_its_origin(listed):
    toy = listed["toy_mlp"]
    assert toy["available"] and toy["origin"] == TOY_ORIGIN, toy
    assert listed["two_layer_mlp"]["origin"] == BUILT_IN
    assert listed["two_layer_mlp"]["available"]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_case_package_is_listed_unavailable_with_its_reason(listed, name):
    entry = listed[name]
    assert not entry["available"], entry
    for word in BROKEN[name]:
        assert word in entry["reason"], entry["reason"]


def test_the_text_listing_shows_origins_and_reasons(broken_site):
    out = equiv("list", sites=(TOY_SITE, broken_site))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    toy = next(line for line in lines if line.strip().startswith("toy_mlp "))
    assert f"[{TOY_ORIGIN}]" in toy
    assert any(line.strip().startswith("two_layer_mlp ") and "[built-in]" in line for line in lines)
    broken = next(line for line in lines if line.strip().startswith("toy_import "))
    assert "unavailable: plugin 'toy_import'" in broken and "toyframework" in broken


def test_without_the_package_the_case_is_gone():
    out = equiv("list", "--json", sites=())
    assert out.returncode == 0, out.stderr
    assert "toy_mlp" not in {c["name"] for c in json.loads(out.stdout)["cases"]}


# -- equiv run ---------------------------------------------------------------------------------


def cells_of(out_dir: Path) -> dict[tuple[str, str, str], dict]:
    doc = json.loads((out_dir / "parity.json").read_text())
    return {(c["case"], c["backend"], c["dtype"]): c for c in doc["cells"]}


def test_an_installed_case_runs_and_a_run_goes_on_beside_broken_ones(broken_site, tmp_path):
    args = ["run", "--backend", "numpy", "--backend", "torch.eager", "--steps", "3"]
    for case in ("toy_mlp", "two_layer_mlp", *BROKEN):
        args += ["--case", case]
    out = equiv(*args, "--bench-rounds", "0", "--out", str(tmp_path), sites=(TOY_SITE, broken_site))
    # broken case packages are reported (skips with the reason) and do not fail the run
    assert out.returncode == 0, out.stdout + out.stderr
    cells = cells_of(tmp_path)
    for dtype in ("float64", "float32"):
        for backend in ("numpy", "torch.eager"):
            assert cells[("toy_mlp", backend, dtype)]["status"] == "pass"
            # the built-in, not the plugin's copy registered under its name
            assert cells[("two_layer_mlp", backend, dtype)]["status"] == "pass"
            for name, words in BROKEN.items():
                cell = cells[(name, backend, dtype)]
                assert cell["status"] == "skip", cell
                assert words[0] in cell["reason"], cell["reason"]


def test_an_unknown_case_is_still_a_one_line_error(tmp_path):
    out = equiv("run", "--case", "nope", "--out", str(tmp_path))
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert "unknown case 'nope'; valid cases:" in line and "toy_mlp" in line


# -- the pytest matrix -------------------------------------------------------------------------


def test_the_pytest_matrix_runs_an_installed_case_and_skips_a_broken_one(broken_site, tmp_path):
    junit = tmp_path / "junit.xml"
    args = ["--equiv-case", "toy_mlp", "--equiv-case", "toy_import", "--equiv-backend", "numpy"]
    proc = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
            "-o", "equiv_steps=3", f"--junitxml={junit}", *args,
            "tests/test_matrix.py::test_parity",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environment(TOY_SITE, broken_site),
        timeout=600,
    )  # fmt: skip
    assert junit.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    outcome = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        skipped = [c for c in case if c.tag == "skipped"]
        failed = [c for c in case if c.tag in ("failure", "error")]
        status = "failed" if failed else "skipped" if skipped else "passed"
        outcome[case.get("name")] = (status, skipped[0].get("message", "") if skipped else "")
    for dtype in ("float64", "float32"):
        assert outcome[f"test_parity[toy_mlp-numpy-{dtype}]"][0] == "passed", outcome
        status, message = outcome[f"test_parity[toy_import-numpy-{dtype}]"]
        assert status == "skipped" and "toyframework" in message, outcome


# -- discovery in-process ----------------------------------------------------------------------


@pytest.fixture
def toy_on_path(monkeypatch):
    """The toy package importable for one test; this process's own discovery has run before
    (so the toy stays out of it, whatever order the tests run in)."""
    from equiv.contract.case import case_catalog

    case_catalog()
    monkeypatch.syspath_prepend(str(TOY_SITE))


def builtins_only() -> dict[str, CaseSpec]:
    from cases.two_layer_mlp.spec import SPEC

    return {SPEC.name: SPEC}


def plugin(name: str, load) -> tuple[str, object, str]:
    return (name, load, f"plugin {name!r} (test 0)")


def test_discovery_takes_a_spec_a_list_or_a_callable(toy_on_path):
    from equiv_toycase import cases
    from equiv_toycase.toy_mlp.spec import SPEC

    for entry in (lambda: SPEC, lambda: [SPEC], lambda: cases, lambda: (s for s in [SPEC])):
        catalog = discover(builtins_only, lambda entry=entry: [plugin("toy", entry)])
        assert catalog.cases["toy_mlp"] is SPEC and not catalog.unavailable
        assert catalog.origins["toy_mlp"] == "plugin 'toy' (test 0)"
        assert catalog.origins["two_layer_mlp"] == BUILT_IN
        assert catalog.names() == ["two_layer_mlp", "toy_mlp"]


def test_discovery_lists_each_kind_of_broken_entry_with_its_reason(toy_on_path):
    from dataclasses import replace

    from equiv_toycase.toy_mlp.spec import SPEC

    def fails():
        raise ImportError("no toyframework")

    def exits():
        raise SystemExit(3)

    catalog = discover(
        builtins_only,
        lambda: [
            plugin("fails", fails),
            plugin("exits", exits),
            plugin("number", lambda: 42),
            plugin("mixed", lambda: [SPEC, "not a spec"]),
            plugin("clash", lambda: replace(SPEC, name="two_layer_mlp")),
            plugin("again", lambda: SPEC),  # a second plugin with toy_mlp
            plugin("nowhere", lambda: replace(SPEC, name="lost", package="cases")),
        ],
    )
    assert set(catalog.cases) == {"two_layer_mlp", "toy_mlp"}
    assert catalog.origins["toy_mlp"] == "plugin 'mixed' (test 0)"
    reasons = {name: u.reason for name, u in catalog.unavailable.items()}
    assert "failed to load: ImportError('no toyframework')" in reasons["fails"]
    assert "SystemExit" in reasons["exits"]
    assert "int is neither a CaseSpec nor an iterable" in reasons["number"]
    assert "str 'not a spec' is not an equiv.contract.case.CaseSpec" in reasons["mixed[1]"]
    assert "which built-in already registered" in reasons["two_layer_mlp@clash"]
    assert "which plugin 'mixed' (test 0) already registered" in reasons["toy_mlp@again"]
    assert "neither a numpy reference (cases/lost/reference.py is missing" in reasons["lost"]
    assert set(catalog.names()) == {"two_layer_mlp", "toy_mlp", *reasons}


def test_a_broken_entry_named_like_a_case_gets_a_name_of_its_own(toy_on_path):
    catalog = discover(builtins_only, lambda: [plugin("two_layer_mlp", lambda: 1 / 0)])
    assert set(catalog.unavailable) == {"two_layer_mlp#2"}
    assert "ZeroDivisionError" in catalog.unavailable["two_layer_mlp#2"].reason


def test_an_unavailable_case_skips_in_run_cell_and_get_case_says_why(monkeypatch):
    from equiv.contract.case import UnavailableCase, case_catalog, get_case
    from equiv.contract.records import Cell
    from equiv.running.runner import RunOptions, run_cell

    broken = UnavailableCase("ghost", "plugin 'ghost' failed to load: ImportError()", "x")
    monkeypatch.setitem(case_catalog().unavailable, "ghost", broken)
    result = run_cell(Cell("ghost", "numpy", "float64"), RunOptions(bench_rounds=0))
    assert (result.status, result.reason) == ("skip", broken.reason)
    with pytest.raises(KeyError, match="unavailable: plugin 'ghost' failed"):
        get_case("ghost")


# -- the JAX plugin finds a case package's own JAX code ----------------------------------------


def test_jax_uses_the_case_packages_own_jax_impl_else_its_own(toy_on_path):
    pytest.importorskip("equiv_jax")
    from dataclasses import replace

    from equiv_jax.backend import JaxEager
    from equiv_toycase.toy_mlp.spec import SPEC

    jax = JaxEager()
    assert jax.implementation_module(SPEC) == "equiv_toycase.toy_mlp.jax_impl"
    builtin = builtins_only()["two_layer_mlp"]  # cases/two_layer_mlp has no jax_impl
    assert jax.implementation_module(builtin) == "equiv_jax.cases.two_layer_mlp"
    absent = replace(SPEC, package="no_such_package_anywhere")
    assert jax.implementation_module(absent) == "equiv_jax.cases.toy_mlp"


def test_an_installed_case_runs_on_jax_from_its_own_jax_impl(tmp_path):
    pytest.importorskip("equiv_jax")
    out = equiv(
        "run", "--case", "toy_mlp", "--backend", "jax.jit", "--dtype", "float64",
        "--steps", "3", "--bench-rounds", "0", "--out", str(tmp_path),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert cells_of(tmp_path)[("toy_mlp", "jax.jit", "float64")]["status"] == "pass"


# -- a case package's own tests, as docs/adding-a-case.md has its author write them -------------

#: the parity test of docs/adding-a-case.md's step 9, with the module mark that the example
#: package's copy carried (and case authors copied)
USER_PARITY = """
import pytest

pytestmark = pytest.mark.matrix


def test_parity(equiv_cell, equiv_run_cell):
    result = equiv_run_cell(equiv_cell)
    if result.status == "skip":
        pytest.skip(result.reason)
    assert result.status in ("pass", "explained"), f"{equiv_cell.id}: {result.reason}"
"""

#: a test that takes equiv_cell without marking itself, beside one that is no cell
USER_UNMARKED = """
def test_not_a_cell():
    pass


def test_a_cell(equiv_cell):
    pass
"""


def user_project(root: Path, name: str, ini: str = "", registers: bool = True) -> Path:
    """A case author's repository: ``pyproject.toml`` naming the distribution (installed, with
    its ``equiv.cases`` entry point, as the toy's dist-info on PYTHONPATH), and its tests; no
    conftest.py."""
    project = root / name
    (project / "tests").mkdir(parents=True)
    entry = '\n[project.entry-points."equiv.cases"]\ntoycase = "equiv_toycase:cases"\n'
    (project / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "0.1"\n'
        + (entry if registers else "")
        + (f"\n[tool.pytest.ini_options]\n{ini}\n" if ini else "")
    )
    (project / "tests" / "test_parity.py").write_text(USER_PARITY.lstrip())
    (project / "tests" / "test_unmarked.py").write_text(USER_UNMARKED.lstrip())
    return project


def user_pytest(project: Path, *args: str, sites: tuple[Path, ...] = (TOY_SITE,)):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly", *args],
        capture_output=True,
        text=True,
        cwd=project,
        env=environment(*sites),
        timeout=600,
    )


def collected_cells(proc: subprocess.CompletedProcess, test: str = "test_parity") -> list[str]:
    """The cell ids of ``test`` that ``pytest --collect-only -q`` listed."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    marker = f"::{test}["
    return [
        line.split(marker)[1].rstrip("]") for line in proc.stdout.splitlines() if marker in line
    ]


def test_a_case_packages_parity_test_collects_its_own_cells_and_no_warning(broken_site, tmp_path):
    """No conftest.py, no pytest configuration: the package's cells only (not equiv's
    built-in cases, not another installed package's), and no warning about the marks."""
    project = user_project(tmp_path, "equiv-toycase")
    proc = user_pytest(project, "--collect-only", "-q", sites=(TOY_SITE, broken_site))
    cells = collected_cells(proc)
    assert cells and {c.split("-")[0] for c in cells} == {"toy_mlp"}, cells
    assert len(cells) == len(set(cells)) and cells == collected_cells(proc, "test_a_cell")
    assert "warning" not in proc.stdout.lower(), proc.stdout[-3000:]


def test_the_plugin_marks_every_cell_matrix(tmp_path):
    project = user_project(tmp_path, "equiv-toycase")
    unmarked = user_pytest(project, "--collect-only", "-q", "-m", "not matrix", "tests")
    assert unmarked.returncode == 0, unmarked.stdout[-3000:] + unmarked.stderr[-3000:]
    tests = [line for line in unmarked.stdout.splitlines() if "::" in line]
    assert tests == ["tests/test_unmarked.py::test_not_a_cell"], unmarked.stdout[-3000:]
    marked = collected_cells(user_pytest(project, "--collect-only", "-q", "-m", "matrix"))
    assert marked and all(c.startswith("toy_mlp-") for c in marked)


def test_the_packages_cells_run_without_a_warning(tmp_path):
    """torch.manual has no implementation of the toy: its cell skips after the backend is
    found available, before any step is timed. The benchmark fixture is then never requested,
    so pytest-benchmark does not warn that it was not used; the cells that run are timed by it.
    torch.jit's cell keeps torch's TorchScript deprecation (the mode under test) to itself."""
    pytest.importorskip("torch")
    project = user_project(tmp_path, "equiv-toycase")
    proc = user_pytest(
        project, "-v", "-o", "equiv_steps=3", "--equiv-bench-rounds", "2",
        "--equiv-backend", "numpy", "--equiv-backend", "torch.manual",
        "--equiv-backend", "torch.jit", "--equiv-dtype", "float64", "tests/test_parity.py",
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "2 passed, 1 skipped" in out, out[-3000:]
    assert "test_parity[toy_mlp-torch.manual-float64] SKIPPED" in out, out[-3000:]
    assert "warning" not in out.lower(), out[-3000:]
    timed = out.split("benchmark: 2 tests")[1]
    assert "[toy_mlp-numpy-float64]" in timed and "[toy_mlp-torch.jit-float64]" in timed, out


def test_a_broken_own_package_shows_its_cells_as_skips_not_everyones(broken_site, tmp_path):
    project = user_project(tmp_path, "toycase-broken")
    proc = user_pytest(project, "--collect-only", "-q", sites=(TOY_SITE, broken_site))
    assert {c.split("-")[0] for c in collected_cells(proc)} == set(BROKEN)


def test_a_project_without_cases_or_with_equiv_cases_chooses_others(tmp_path):
    """A repository that registers no case (a CI of several packages) gets every installed
    case; the ini option ``equiv_cases`` (names, patterns) chooses for any project; an explicit
    --equiv-case wins over both."""
    everything = user_project(tmp_path, "parity-ci", registers=False)
    cases = {
        c.split("-")[0] for c in collected_cells(user_pytest(everything, "--collect-only", "-q"))
    }
    assert {"toy_mlp", "two_layer_mlp"} <= cases
    chosen = user_project(tmp_path, "equiv-toycase", ini='equiv_cases = ["two_*", "toy_mlp"]')
    cases = {c.split("-")[0] for c in collected_cells(user_pytest(chosen, "--collect-only", "-q"))}
    assert cases == {"toy_mlp", "two_layer_mlp"}
    asked = user_pytest(chosen, "--collect-only", "-q", "--equiv-case", "two_layer_mlp")
    assert {c.split("-")[0] for c in collected_cells(asked)} == {"two_layer_mlp"}
    wrong = user_project(tmp_path / "wrong", "equiv-toycase", ini='equiv_cases = ["nope*"]')
    proc = user_pytest(wrong, "--collect-only", "-q")
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "equiv_cases 'nope*' names no installed case; cases: " in proc.stdout


def test_a_case_package_that_is_not_installed_fails_its_collection_saying_so(tmp_path):
    """Rather than run every installed case (its own are not found)."""
    project = user_project(tmp_path, "equiv-lstm")  # declares equiv.cases, never installed
    proc = user_pytest(project, "--collect-only", "-q")
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ERROR collecting tests/test_parity.py" in proc.stdout
    assert "no installed distribution 'equiv-lstm' does: install" in proc.stdout
    assert "Traceback" not in proc.stdout and "toy_mlp" not in proc.stdout


def test_equivs_own_suite_runs_the_example_packages_cells_once():
    """In equiv's checkout the matrix test (outside any case package) takes every installed
    case, the example package's included; the example's own parity test steps aside there
    (its conftest.py), and on its own it collects its two cases' cells only."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("equiv-transformer")
    except PackageNotFoundError:
        pytest.skip(
            "equiv-transformer is not installed (pip install -e examples/equiv-transformer)"
        )
    example = "examples/equiv-transformer/tests/test_parity.py"
    both = user_pytest(ROOT, "--collect-only", "-q", "tests/test_matrix.py", example, sites=())
    matrix = collected_cells(both)
    assert {"transformer_block", "transformer_block_defaults", "two_layer_mlp"} <= {
        c.split("-")[0] for c in matrix
    }
    assert example not in both.stdout
    alone = collected_cells(user_pytest(ROOT, "--collect-only", "-q", example, sites=()))
    example_cases = {"transformer_block", "transformer_block_defaults", "lstm_regressor"}
    assert {c.split("-")[0] for c in alone} == example_cases
    # the example's own run collects its slow cells too (marked, and deselected by -m)
    fast = [c for c in alone if not get_case(c.split("-")[0]).slow_on(c.split("-")[1])]
    assert sorted(fast) == sorted(c for c in matrix if c.split("-")[0] in example_cases)
