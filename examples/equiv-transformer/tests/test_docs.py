"""docs/adding-a-case.md takes its snippets from this package: each line of its python and
toml blocks (but the elisions, ``...``) is a line of one of this package's files, so the
walk-through cannot drift from the code it describes. Skipped outside equiv's checkout."""

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1]
DOC = PACKAGE.parents[1] / "docs" / "adding-a-case.md"


def package_lines() -> set[str]:
    files = [*PACKAGE.glob("equiv_transformer/**/*.py"), *PACKAGE.glob("tests/*.py")]
    files.append(PACKAGE / "pyproject.toml")
    return {line.strip() for f in files for line in f.read_text().splitlines() if line.strip()}


def snippets() -> list[str]:
    if not DOC.exists():
        pytest.skip(f"{DOC} is not here (not equiv's checkout)")
    return re.findall(r"```(?:python|toml)\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_snippet_line_is_in_the_package():
    found = package_lines()
    blocks = snippets()
    assert blocks, "the walk-through has no python or toml block"
    missing = [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and "..." not in line and line.strip() not in found
    ]
    assert not missing, f"lines of docs/adding-a-case.md that no file here has: {missing}"
