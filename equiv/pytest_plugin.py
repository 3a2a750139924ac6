"""The pytest plugin (entry point ``pytest11``): the parity matrix as parametrized tests.

A test that takes the ``equiv_cell`` fixture is parametrized over the selected cells, with ids
``case-backend-dtype``; ``equiv_run_cell(cell)`` runs one (in this process, timing through the
test's own pytest-benchmark fixture, or in a worker when the backend needs its own process) and
the result is kept for ``--equiv-report DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("equiv", "cross-framework parity matrix")
    group.addoption("--equiv-case", action="append", default=[], help="only this case")
    group.addoption("--equiv-backend", action="append", default=[], help="only this backend")
    group.addoption("--equiv-dtype", action="append", default=[], help="only this dtype")
    group.addoption("--equiv-seed", type=int, default=0)
    group.addoption("--equiv-steps", type=int, default=None, help="steps (default: the case's)")
    group.addoption("--equiv-bench-rounds", type=int, default=10)
    group.addoption(
        "--equiv-isolate",
        choices=("none", "backend"),
        default="none",
        help="run every cell in a worker process (default: in this process)",
    )
    group.addoption("--equiv-report", default=None, metavar="DIR", help="write parity.json here")


def _options(config: pytest.Config):
    from equiv.runner import RunOptions

    steps = config.getoption("--equiv-steps")
    if steps is not None and steps <= 0:
        raise pytest.UsageError("--equiv-steps must be a positive integer")
    return RunOptions(
        seed=config.getoption("--equiv-seed"),
        steps=steps,
        threads=os.cpu_count() or 1,
        bench_rounds=config.getoption("--equiv-bench-rounds"),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "equiv_cell: a parity-matrix cell")
    config._equiv_results = []  # type: ignore[attr-defined]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "equiv_cell" not in metafunc.fixturenames:
        return
    from equiv.matrix import SelectionError, select_cells

    cfg = metafunc.config
    try:
        cells = select_cells(
            cfg.getoption("--equiv-case"),
            cfg.getoption("--equiv-backend"),
            cfg.getoption("--equiv-dtype"),
        )
    except SelectionError as exc:
        raise pytest.UsageError(str(exc)) from None
    metafunc.parametrize("equiv_cell", cells, ids=[c.id for c in cells])


@pytest.fixture(scope="session")
def equiv_options(request: pytest.FixtureRequest):
    return _options(request.config)


@pytest.fixture
def equiv_run_cell(request: pytest.FixtureRequest, equiv_options):
    """Run a cell and return its CellResult; kept for ``--equiv-report``."""
    from equiv.registry import get_backend
    from equiv.runner import run_cell
    from equiv.workers import run_group

    isolate = request.config.getoption("--equiv-isolate") == "backend"

    def run(cell, impl=None):
        backend = get_backend(cell.backend)
        if backend.availability() is None and (isolate or backend.needs_own_process):
            (result,) = run_group([(cell, impl)], equiv_options, env=dict(backend.worker_env))
        else:
            fixture = None
            if "benchmark" in request.fixturenames and backend.availability() is None:
                fixture = request.getfixturevalue("benchmark")
            result = run_cell(cell, equiv_options, impl=impl, bench_fixture=fixture)
        result.trajectory = (
            result.trajectory if request.config.getoption("--equiv-report") else None
        )
        request.config._equiv_results.append(result)
        return result

    return run


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    out = session.config.getoption("--equiv-report")
    results = getattr(session.config, "_equiv_results", [])
    if not out or not results:
        return
    from equiv.output import write_outputs

    write_outputs(Path(out), results, _options(session.config), argv=["pytest"])
