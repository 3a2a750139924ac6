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

from equiv.registry import BrokenBackend, _load_group

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
from equiv.backends.base import Backend


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
        ("toy.half", ["HalfAdapter is not an equiv.backends.base.Backend", "lacks", "to_numpy"]),
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
    assert cells and {c["status"] for c in cells} == {"pass"}


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
