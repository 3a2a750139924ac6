"""Only for equiv's own checkout: a case package of yours needs no ``conftest.py``.

equiv's pytest plugin gives ``test_parity.py`` this package's own cases (the distribution that
``pyproject.toml`` here names registers them). equiv's own test suite collects this folder too
(its ``testpaths``), and its matrix test, outside any case package, takes every installed case,
these included: there each of these cells would run twice, so this folder's copy steps aside
for a cell that a test elsewhere in the session already runs.
"""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _cell_id(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    cell = callspec.params.get("equiv_cell") if callspec else None
    return cell.id if cell is not None else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    elsewhere = {_cell_id(i) for i in items if i.path.parent != HERE} - {None}
    drop = [i for i in items if i.path.parent == HERE and _cell_id(i) in elsewhere]
    if drop:
        config.hook.pytest_deselected(items=drop)
        dropped = {id(i) for i in drop}
        items[:] = [i for i in items if id(i) not in dropped]
