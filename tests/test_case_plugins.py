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
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from equiv.contract.case import BUILT_IN, CaseSpec, discover

ROOT = Path(__file__).resolve().parents[1]
TOY_SITE = Path(__file__).parent / "fixtures" / "case_plugin"
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
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, sites), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
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
    assert "reference module cases.lost.reference is missing" in reasons["lost"]
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
