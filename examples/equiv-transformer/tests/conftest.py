"""Keep ``test_parity.py`` to this package's own cells.

Without a selection, equiv's plugin gives ``equiv_cell`` every cell of every installed case
(equiv's built-in ones too); this package's parity test runs its own. Where the session also
holds another test that takes ``equiv_cell`` (equiv's own matrix, when this folder is collected
from equiv's checkout), that test already runs these cells, and this one steps aside rather
than run each twice.
"""

from pathlib import Path

import pytest

from equiv_transformer import cases

HERE = Path(__file__).parent


def _cell(item: pytest.Item):
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("equiv_cell") if callspec else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    own = {spec.name for spec in cases()}
    ours = [i for i in items if _cell(i) is not None and i.path.parent == HERE]
    elsewhere = any(_cell(i) is not None and i.path.parent != HERE for i in items)
    drop = [i for i in ours if elsewhere or _cell(i).case not in own]
    if drop:
        config.hook.pytest_deselected(items=drop)
        dropped = {id(i) for i in drop}
        items[:] = [i for i in items if id(i) not in dropped]
