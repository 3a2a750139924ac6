"""Everything the repository cites is in the repository (or upstream, named as such).

A user has the repository and the frameworks' own sources: a path into a folder they do not
have, or a row of a table they cannot see, explains nothing. Upstream sources are cited by
their own paths (``keras/src/...``) and issue threads (``keras-team/keras#17391``), which this
check leaves alone: it holds paths into the repository's own top-level folders, and ``*.md``
names, to files that exist, in everything but the tests (which name the files they make); no
file at all may name the notes that were never part of the repository.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: folders of the repository whose paths a text may cite
TOP = ("docs", "equiv", "cases", "tests", "plugins", "examples", "benchmarks")
#: notes that were never part of the repository (split so that this file does not cite them)
#: (docs/known-differences.md, generated from equiv's own catalogue, is the product's page)
FORBIDDEN = (
    "shared/known-" + "differences",
    "DESIGN" + ".md",
    "shared" + "/seed",
    "../" + "shared",
)
#: paths that name a file the reader writes in a package of their own
READERS_OWN = {("docs/adding-a-backend.md", "tests/test_conformance.py")}
TEXT = (".py", ".md", ".toml", ".ini", ".j2", ".txt", ".cfg", ".yml", ".yaml")
PATH = re.compile(r"(?<![\w./<{*-])((?:[\w.-]+/)+[\w.-]*|[\w-]+\.md)(?![\w{}*/])")


def tracked_texts(root: Path) -> list[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True)
    return [f for f in listed.stdout.split() if f.endswith(TEXT)]


def package_roots(root: Path) -> list[Path]:
    return [p.parent for p in root.glob("*/*/pyproject.toml")] + [root]


def dangling(root: Path, files: list[str]) -> list[str]:
    """``file:line: path`` for each cited repository path that does not exist."""
    roots = package_roots(root)
    found = []
    for name in files:
        if "tests" in Path(name).parts[:-1]:
            continue  # tests write files of their own (a user's project in tmp_path)
        path = root / name
        own = next((a for a in path.parents if (a / "pyproject.toml").exists()), root)
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for m in PATH.finditer(line):
                cited = m.group(1).rstrip(".")
                if "/" in cited and cited.split("/")[0] not in TOP:
                    continue  # upstream (keras/src/...), a URL, a placeholder
                if "/" not in cited and not cited.endswith(".md"):
                    continue
                if (name, cited) in READERS_OWN:
                    continue
                bases = [own, path.parent, root / "docs", *roots]
                if not any((base / cited).exists() for base in bases):
                    found.append(f"{name}:{n}: {cited}")
    return found


def forbidden(root: Path, files: list[str]) -> list[str]:
    return [
        f"{name}:{n}: {word}"
        for name in files
        for n, line in enumerate((root / name).read_text(errors="replace").splitlines(), 1)
        for word in FORBIDDEN
        if word in line
    ]


@pytest.fixture(scope="module")
def files() -> list[str]:
    found = tracked_texts(ROOT)
    if not found:
        pytest.skip("not a git checkout: no list of tracked files")
    return found


def test_every_cited_repository_path_exists(files):
    assert dangling(ROOT, files) == []


def test_nothing_cites_notes_outside_the_repository(files):
    assert forbidden(ROOT, files) == []


def test_a_moved_module_and_an_outside_note_are_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text('"""Writes equiv/made_here.py."""\n')
    (tmp_path / "equiv").mkdir()
    (tmp_path / "equiv" / "layers.py").write_text("")
    (tmp_path / "docs" / "a.md").write_text(
        "See `equiv/layers.py`, `equiv/kinks.py`, keras/src/ops/nn.py and verdicts.md.\n"
        + "From the "
        + FORBIDDEN[0]
        + " table.\n"
    )
    files = ["docs/a.md", "tests/test_x.py"]
    assert dangling(tmp_path, files) == ["docs/a.md:1: equiv/kinks.py", "docs/a.md:1: verdicts.md"]
    assert forbidden(tmp_path, files) == [f"docs/a.md:2: {FORBIDDEN[0]}"]
