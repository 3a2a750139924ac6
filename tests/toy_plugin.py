"""A toy distribution "installed" into a folder as pip would leave it in site-packages (a
``*.dist-info`` with METADATA and entry_points.txt, beside its modules), for tests that put
the folder on PYTHONPATH and run equiv as a user would, with a third-party plugin."""

from __future__ import annotations

import textwrap
from pathlib import Path


def install(site: Path, dist: str, entry_points: str, modules: dict[str, str]) -> Path:
    """``dist``: the distribution's name; ``entry_points``: entry_points.txt's text;
    ``modules``: file name -> source (dedented). Returns ``site``."""
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    for name, text in modules.items():
        (site / name).write_text(textwrap.dedent(text).lstrip())
    return site


def backend_plugin(site: Path, module: str, source: str) -> Path:
    """A plugin whose ``module`` registers backends through its ``backends()``."""
    entry = f"[equiv.backends]\ntoy = {module}:backends\n"
    return install(site, module.replace("_", "-"), entry, {f"{module}.py": source})
