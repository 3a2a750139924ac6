"""The pytest plugin (entry point ``pytest11``): the parity matrix as parametrized tests.

A test that takes the ``equiv_cell`` fixture is parametrized over the selected cells, with ids
``case-backend-dtype``; ``equiv_run_cell(cell)`` runs one (in this process, timing through the
test's own pytest-benchmark fixture, or in a worker when the backend needs its own process) and
the result is kept for ``--equiv-report DIR``.

Under pytest-xdist (``pytest -n N``) the cells run side by side, so no step is timed (as
pytest-benchmark, which disables itself under xdist), calibrations are shared through the
calibration store (``equiv.tolerance.store``), and each xdist worker leaves its results in a
spool folder from which the controller writes the one ``--equiv-report`` document.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pytest

#: the key under which the controlling pytest process hands its xdist workers the spool folder
#: (``workerinput``, not the environment: a test's own pytest subprocess would inherit that, and
#: take the outer session's spool for its own)
SPOOL_KEY = "equiv_spool"
XDIST_NO_BENCH = "pytest-xdist ran cells side by side (pytest-benchmark is disabled under xdist)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("equiv", "cross-framework parity matrix")
    group.addoption("--equiv-case", action="append", default=[], help="only this case")
    group.addoption("--equiv-backend", action="append", default=[], help="only this backend")
    group.addoption("--equiv-dtype", action="append", default=[], help="only this dtype")
    group.addoption("--equiv-seed", type=int, default=0)
    group.addoption(
        "--equiv-steps",
        type=int,
        default=None,
        help="steps per cell (default: the equiv_steps ini value, else each case's own)",
    )
    parser.addini(
        "equiv_steps",
        "steps per cell when --equiv-steps is not given; empty: each case's own (the seed's)",
        default="",
    )
    parser.addini(
        "equiv_reproducibility",
        "re-run each matrix cell's first steps on a fresh build and record whether the bits "
        "repeat (the cell's `reproducible`; informative, not part of the verdict)",
        type="bool",
        default=True,
    )
    group.addoption("--equiv-bench-rounds", type=int, default=10)
    group.addoption(
        "--equiv-isolate",
        choices=("none", "backend"),
        default="none",
        help="run every cell in a worker process (default: in this process)",
    )
    group.addoption(
        "--equiv-threads",
        type=int,
        default=1,
        help="threads per framework (default 1: as `equiv run` with one worker per core; "
        "under pytest -n more would oversubscribe the cores)",
    )
    group.addoption("--equiv-report", default=None, metavar="DIR", help="write parity.json here")
    group.addoption(
        "--equiv-cache-dir",
        default=None,
        metavar="DIR",
        help="calibration cache (default: $EQUIV_CACHE_DIR or ~/.cache/equiv)",
    )
    group.addoption(
        "--equiv-no-cache",
        action="store_true",
        help="compute calibrations afresh (still once per session, shared by xdist workers)",
    )


def _xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _parallel(config: pytest.Config) -> bool:
    """Whether cells of this session run side by side (pytest-xdist)."""
    return _xdist_worker(config) or bool(getattr(config.option, "numprocesses", None))


def _ini_steps(config: pytest.Config) -> int | None:
    """``equiv_steps`` from the ini file (or ``-o equiv_steps=N``); None when empty."""
    value = str(config.getini("equiv_steps")).strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise pytest.UsageError(f"equiv_steps must be an integer, not {value!r}") from None


def _cache_directory(config: pytest.Config) -> Path:
    """--equiv-cache-dir (a private folder under --equiv-no-cache), else the default store."""
    from equiv.tolerance.store import default_directory

    cache = config.getoption("--equiv-cache-dir")
    return Path(cache) if cache else default_directory()


def _options(config: pytest.Config):
    from equiv.running.runner import RunOptions

    steps = config.getoption("--equiv-steps")
    # the ini's count is the matrix's budget: a case may cap it (``CaseSpec.matrix_steps``);
    # an explicit --equiv-steps is taken as given
    capped = steps is None
    if steps is None:
        steps = _ini_steps(config)
    if steps is not None and steps <= 0:
        raise pytest.UsageError("--equiv-steps must be a positive integer")
    return RunOptions(
        seed=config.getoption("--equiv-seed"),
        steps=steps,
        threads=config.getoption("--equiv-threads"),
        bench_rounds=0 if _parallel(config) else config.getoption("--equiv-bench-rounds"),
        calibration_dir=str(_cache_directory(config)),
        check_reproducible=config.getini("equiv_reproducibility"),
        cap_matrix_steps=capped,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "equiv_cell: a parity-matrix cell")
    config._equiv_results = []  # type: ignore[attr-defined]
    config._equiv_sessions = {}  # type: ignore[attr-defined]
    if _xdist_worker(config):
        return  # the controller below set up what the workers share
    if config.getoption("--equiv-no-cache"):
        private = tempfile.mkdtemp(prefix="equiv-calibrations-")
        config._equiv_private_cache = private  # type: ignore[attr-defined]
        config.option.equiv_cache_dir = private
        os.environ["EQUIV_CACHE_DIR"] = private  # xdist workers inherit it
    _keep_jax_compilations(config)
    if _parallel(config) and config.getoption("--equiv-report"):
        config._equiv_spool = tempfile.mkdtemp(prefix="equiv-pytest-results-")  # type: ignore[attr-defined]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """pytest-xdist's hook, in the controller: each worker is told where to leave its results."""
    spool = getattr(node.config, "_equiv_spool", None)
    if spool:
        node.workerinput[SPOOL_KEY] = spool


def _keep_jax_compilations(config: pytest.Config) -> None:
    """Every process of the session (xdist workers, cells' workers, tests' subprocesses)
    shares JAX's compilations in the calibration cache (``equiv.running.compile_cache``)."""
    from equiv.running.compile_cache import jax_compilations_kept_in

    stack = contextlib.ExitStack()
    stack.enter_context(jax_compilations_kept_in(_cache_directory(config)))
    config.add_cleanup(stack.close)


def pytest_unconfigure(config: pytest.Config) -> None:
    for session in getattr(config, "_equiv_sessions", {}).values():
        session.close()
    private = getattr(config, "_equiv_private_cache", None)
    if private:
        shutil.rmtree(private, ignore_errors=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "equiv_cell" not in metafunc.fixturenames:
        return
    from equiv.running.matrix import SelectionError, select_cells

    cfg = metafunc.config
    try:
        cells = select_cells(
            cfg.getoption("--equiv-case"),
            cfg.getoption("--equiv-backend"),
            cfg.getoption("--equiv-dtype"),
        )
    except SelectionError as exc:
        raise pytest.UsageError(str(exc)) from None
    metafunc.parametrize("equiv_cell", [_with_marks(c) for c in cells], ids=[c.id for c in cells])


def _with_marks(cell):
    """A cell whose case lists its backend in ``slow_backends`` is marked ``slow``."""
    from equiv.contract.case import all_cases

    spec = all_cases().get(cell.case)
    if spec and spec.slow_on(cell.backend):
        return pytest.param(cell, marks=pytest.mark.slow)
    return cell


@pytest.fixture(scope="session")
def equiv_options(request: pytest.FixtureRequest):
    return _options(request.config)


@pytest.fixture
def equiv_run_cell(request: pytest.FixtureRequest, equiv_options):
    """Run a cell and return its CellResult; kept for ``--equiv-report``. A cell of an
    unavailable backend or case package is a skip with the reason, found in this process."""
    from equiv.backends.registry import get_backend
    from equiv.contract.case import unavailable_cases
    from equiv.running.runner import run_cell
    from equiv.running.workers import WorkerSession

    isolate = request.config.getoption("--equiv-isolate") == "backend"
    sessions = request.config._equiv_sessions

    def run(cell, impl=None):
        backend = get_backend(cell.backend)
        usable = backend.availability() is None and cell.case not in unavailable_cases()
        if usable and (isolate or backend.needs_own_process):
            # one worker per backend for the whole session: its framework is imported once
            if backend.id not in sessions:
                sessions[backend.id] = WorkerSession(
                    equiv_options, dict(backend.worker_env), backend.worker_hides
                )
            result = sessions[backend.id].run((cell, impl))
        else:
            fixture = None
            # pytest-benchmark's own fixture, so the timings land in its table and JSON; asked
            # for only when steps are timed (an unused one warns, once per cell under xdist)
            if equiv_options.bench_rounds > 0 and usable:
                fixture = request.getfixturevalue("benchmark")
            result = run_cell(cell, equiv_options, impl=impl, bench_fixture=fixture)
        result.trajectory = (
            result.trajectory if request.config.getoption("--equiv-report") else None
        )
        request.config._equiv_results.append(result)
        return result

    return run


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    out = config.getoption("--equiv-report")
    results = list(getattr(config, "_equiv_results", []))
    if _xdist_worker(config):
        spool = config.workerinput.get(SPOOL_KEY)
        if out and spool and results:
            name = f"{config.workerinput.get('workerid', os.getpid())}.pickle"
            (Path(spool) / name).write_bytes(pickle.dumps(results))
        return
    spool = getattr(config, "_equiv_spool", None)
    if spool:  # the controller of an xdist session: its workers have finished
        for part in sorted(Path(spool).glob("*.pickle")):
            results += pickle.loads(part.read_bytes())
        shutil.rmtree(spool, ignore_errors=True)
    if not out or not results:
        return
    from equiv.running.output import write_outputs

    jobs = getattr(config.option, "numprocesses", None) or 1
    write_outputs(
        Path(out),
        results,
        _options(config),
        argv=["pytest"],
        jobs=jobs,
        bench_disabled_by=XDIST_NO_BENCH if _parallel(config) else None,
    )
