"""The environment of a process a test starts (``equiv``, or a pytest session of its own).

Such a process is not one of this session's xdist workers: pytest-benchmark reads
``PYTEST_XDIST_WORKER`` from the environment and would disable itself in a nested pytest.
"""

from __future__ import annotations

import os
from pathlib import Path

#: an installed case package (equiv-toycase), put on the path instead of installed
TOY_SITE = Path(__file__).parent / "fixtures" / "case_plugin"


def child_environment(*sites: Path) -> dict[str, str]:
    """This process's environment with ``sites`` first on PYTHONPATH and this session's own
    pytest variables left out."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYTEST_XDIST_") and k != "PYTEST_CURRENT_TEST"
    }
    env["PYTHONPATH"] = os.pathsep.join([*map(str, sites), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return env
