"""The pytest plugin (entry point ``pytest11``): the parity matrix as parametrized tests.

A test that takes the ``equiv_cell`` fixture is parametrized over the selected cells, with ids
``case-backend-dtype``; ``equiv_run_cell(cell)`` runs one (in this process, timing through the
test's own pytest-benchmark fixture, or in a worker when the backend needs its own process) and
the result is kept for ``--equiv-report DIR``.

Under pytest-xdist (``pytest -n N``) the cells run side by side, so no step is timed (as
pytest-benchmark, which disables itself under xdist), calibrations are shared through the
calibration store (``equiv.tolerance.store``), and each xdist worker leaves its results in a
spool folder from which the controller writes the one ``--equiv-report`` document.

Which cases a test gets without ``--equiv-case`` (``_default_cases``): the ``equiv_cases`` ini
value if set; else, for a test file inside a case package's own project (the nearest
``pyproject.toml`` above it names a distribution that registers ``equiv.cases`` entry points),
that package's cases; else every installed case (equiv's own suite, a CI repository that
installs case packages). The cells are marked ``matrix``, and ``slow`` where their case says.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

#: the key under which the controlling pytest process hands its xdist workers the spool folder
#: (``workerinput``, not the environment: a test's own pytest subprocess would inherit that, and
#: take the outer session's spool for its own)
SPOOL_KEY = "equiv_spool"
XDIST_NO_BENCH = "pytest-xdist ran cells side by side (pytest-benchmark is disabled under xdist)"


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config) -> int | None:
    """``-n auto``: a worker per core, but no more than the available memory holds
    (``equiv.running.capacity``); ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still decides where set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    from equiv.running.capacity import default_jobs

    capacity = default_jobs()
    if capacity.limited_by_memory:
        print(f"equiv: -n auto: {capacity.limited_by_memory}", file=sys.stderr)
    return capacity.jobs


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
    group.addoption(
        "--equiv-no-resync",
        action="store_true",
        help="stop comparing at the float32 horizon instead of resynchronising each later step "
        "to the reference's state (docs/tolerances.md)",
    )
    group.addoption(
        "--equiv-reference",
        default=None,
        metavar="PORT",
        help="hold every cell to this backend's port (float64, equiv's update rule) instead of "
        "the case's numpy reference (e.g. torch.eager)",
    )
    group.addoption(
        "--equiv-diagnose",
        action="store_true",
        help="for each failing cell, search the catalogue of known framework differences for "
        "the set that explains it (the cell stays failed; the set is in its message)",
    )
    group.addoption(
        "--equiv-strict-declarations",
        action="store_true",
        help="a declared difference that no longer shows fails its cell instead of warning",
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
    parser.addini(
        "equiv_cases",
        "cases (names or fnmatch patterns, '*': every installed case) that a test taking "
        "equiv_cell gets without --equiv-case; empty: the test's own case package's cases, or "
        "every installed case outside a case package",
        type="args",
        default=[],
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
        "--equiv-worker-max-rss",
        type=int,
        default=None,
        metavar="MB",
        help="a backend's worker process (Keras's backends, --equiv-isolate backend) whose peak "
        "memory has passed MB is replaced by a fresh one before its next cell",
    )
    group.addoption(
        "--equiv-keep-arrays",
        action="store_true",
        help="with --equiv-report: every cell's arrays in DIR/trajectories (default: a failing "
        "cell's at its first divergence)",
    )
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
        resync=not config.getoption("--equiv-no-resync"),
        reference=_reference(config),
        diagnose=config.getoption("--equiv-diagnose"),
        strict_declarations=config.getoption("--equiv-strict-declarations"),
        keep_arrays=config.getoption("--equiv-keep-arrays"),
        # digests only where a report keeps them
        digests=bool(config.getoption("--equiv-report")),
    )


def _reference(config: pytest.Config) -> str | None:
    from equiv.backends.reference_port import refusal

    port = config.getoption("--equiv-reference")
    if port is not None and (why := refusal(port)):
        raise pytest.UsageError(f"--equiv-reference {port}: {why}")
    return port


def pytest_configure(config: pytest.Config) -> None:
    # the marks the plugin puts on cells (and that case packages' tests write, as
    # ``pytestmark = pytest.mark.matrix``): registered here so that no project needs to
    # register them itself (pytest warns of an unknown mark)
    config.addinivalue_line("markers", "equiv_cell: a parity-matrix cell")
    config.addinivalue_line("markers", "matrix: one (case, backend, dtype) parity cell")
    config.addinivalue_line(
        "markers", "slow: a parity cell its case leaves to `pytest -m slow` (slow_backends)"
    )
    config._equiv_results = []  # type: ignore[attr-defined]
    config._equiv_sessions = {}  # type: ignore[attr-defined]
    if _xdist_worker(config):
        return  # the controller below set up what the workers share
    _check_selection(config)
    if config.getoption("--equiv-no-cache"):
        private = tempfile.mkdtemp(prefix="equiv-calibrations-")
        config._equiv_private_cache = private  # type: ignore[attr-defined]
        config.option.equiv_cache_dir = private
        os.environ["EQUIV_CACHE_DIR"] = private  # xdist workers inherit it
    _keep_jax_compilations(config)
    if _parallel(config) and config.getoption("--equiv-report"):
        config._equiv_spool = tempfile.mkdtemp(prefix="equiv-pytest-results-")  # type: ignore[attr-defined]


def _check_selection(config: pytest.Config) -> None:
    """An unknown ``--equiv-case``, ``--equiv-backend`` or ``--equiv-dtype`` is a usage error
    before collection, which pytest prints as one line ("ERROR: unknown case ..."); raised
    while a test module is collected, it came with the plugin's traceback."""
    chosen = [config.getoption(o) for o in ("--equiv-case", "--equiv-backend", "--equiv-dtype")]
    if not any(chosen):
        return
    from equiv.running.matrix import SelectionError, select_cells

    try:
        select_cells(*chosen)
    except SelectionError as exc:
        raise pytest.UsageError(str(exc)) from None


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


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """After a test that grew the process, its cyclic garbage is collected; between test
    modules the memory their cells freed goes back to the system (``equiv.running.memory``):
    an xdist worker otherwise stays near the largest it has held and grows module by module
    (measured on equiv's own suite: 12 GB in one worker)."""
    from equiv.running.memory import release_freed_memory

    release_freed_memory(trim=nextitem is None or nextitem.path != item.path)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "equiv_cell" not in metafunc.fixturenames:
        return
    from equiv.running.matrix import select_cells

    cfg = metafunc.config
    cases = cfg.getoption("--equiv-case") or _default_cases(cfg, metafunc.definition.path)
    # the options were checked in pytest_configure (_check_selection), the defaults are valid
    cells = select_cells(cases, cfg.getoption("--equiv-backend"), cfg.getoption("--equiv-dtype"))
    metafunc.parametrize("equiv_cell", [_with_marks(c) for c in cells], ids=[c.id for c in cells])


def _default_cases(config: pytest.Config, test_file: Path) -> list[str]:
    """The cases a test gets without ``--equiv-case`` (empty: every installed case): the
    ``equiv_cases`` ini value, else the cases of the case package whose project holds the test
    file, so that a case package's own parity test runs its cases and not everyone's. A
    problem fails the collection of the test file with a one-line reason (CollectError)."""
    from equiv.contract.case import case_catalog

    names = case_catalog().names()
    patterns = list(config.getini("equiv_cases"))
    if patterns:
        unmatched = [p for p in patterns if not fnmatch.filter(names, p)]
        if unmatched:
            raise pytest.Collector.CollectError(
                f"equiv_cases {', '.join(map(repr, unmatched))} names no installed case; "
                f"cases: {', '.join(names)}"
            )
        return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    project = _project_file(test_file.parent)
    return list(_project_cases(project)) if project else []


@functools.cache
def _project_file(folder: Path) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``folder``: the test file's project."""
    for candidate in (folder, *folder.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate / "pyproject.toml"
    return None


@functools.cache
def _project_cases(pyproject: Path) -> tuple[str, ...]:
    """The cases registered (``equiv.cases``) by the installed distribution that ``pyproject``
    names, usable or not (a broken one's cells skip with the reason); () for a project that
    registers none. A project that declares the entry point but is not installed (or was
    installed before it declared it) fails the test file's collection, saying so, rather than
    run every installed case."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: pytest itself depends on tomli there
        import tomli as tomllib

    from packaging.utils import canonicalize_name

    from equiv.contract.case import GROUP, case_catalog
    from equiv.contract.plugins import ordered_entry_points

    try:
        project: dict[str, Any] = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    table = project.get("project", {})
    name = table.get("name") or project.get("tool", {}).get("poetry", {}).get("name")
    if not isinstance(name, str):
        return ()
    origins = {
        origin
        for ep, _, origin in ordered_entry_points(GROUP)
        if getattr(ep, "dist", None) and canonicalize_name(ep.dist.name) == canonicalize_name(name)
    }
    catalog = case_catalog()
    own = tuple(n for n in catalog.names() if catalog.origins.get(n) in origins)
    if not own and GROUP in table.get("entry-points", {}):
        raise pytest.Collector.CollectError(
            f"{pyproject} registers {GROUP!r} entry points, but no installed distribution "
            f"{name!r} does: install the project (pip install -e .) so that equiv finds its "
            "cases, or choose them with --equiv-case"
        )
    return own


#: what torch (2.13 on) says each time the torch.jit backend scripts a model: TorchScript is
#: one of the modes under test, so in a cell this is the harness's choice, not the user's
#: code (equiv's own pyproject filters it for its whole suite)
TORCHSCRIPT_DEPRECATED = "ignore:`torch.jit.script(_method)?` is deprecated:DeprecationWarning"


def _with_marks(cell):
    """Every cell is marked ``matrix`` (and keeps TorchScript's deprecation to itself); one
    whose case lists its backend in ``slow_backends`` is marked ``slow`` too."""
    from equiv.contract.case import all_cases

    spec = all_cases().get(cell.case)
    marks = [pytest.mark.matrix, pytest.mark.filterwarnings(TORCHSCRIPT_DEPRECATED)]
    if spec and spec.slow_on(cell.backend):
        marks.append(pytest.mark.slow)
    return pytest.param(cell, marks=marks)


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
    from equiv.running.workers import Recycle, WorkerSession

    isolate = request.config.getoption("--equiv-isolate") == "backend"
    sessions = request.config._equiv_sessions

    def run(cell, impl=None):
        backend = get_backend(cell.backend)
        usable = backend.availability() is None and cell.case not in unavailable_cases()
        if usable and (isolate or backend.needs_own_process):
            # one worker per backend for the whole session: its framework is imported once
            if backend.id not in sessions:
                sessions[backend.id] = WorkerSession(
                    equiv_options,
                    dict(backend.worker_env),
                    backend.worker_hides,
                    recycle=Recycle(max_rss_mb=request.config.getoption("--equiv-worker-max-rss")),
                )
            result = sessions[backend.id].run((cell, impl))
        else:
            fixture = None
            if equiv_options.bench_rounds > 0 and usable:
                fixture = _BenchmarkOnUse(request)
            result = run_cell(cell, equiv_options, impl=impl, bench_fixture=fixture)
        if not request.config.getoption("--equiv-report"):
            result.trajectory = result.step_records = None
        request.config._equiv_results.append(result)
        return result

    return run


class _BenchmarkOnUse:
    """pytest-benchmark's ``benchmark`` fixture, requested when the runner first uses it, so
    that the timings land in its table and JSON. Requested up front, it warns "Benchmark fixture
    was not used" for each cell that ends before its steps are timed (no implementation of the
    case, a build that raises). Under ``--benchmark-skip`` it is requested at once, to skip the
    test before the cell runs, as for any test that takes the fixture."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self._fixture: Any = None
        session = getattr(request.config, "_benchmarksession", None)
        if session is not None and session.skip:
            self._resolve()

    def _resolve(self) -> Any:
        if self._fixture is None:
            self._fixture = self._request.getfixturevalue("benchmark")
        return self._fixture

    def __getattr__(self, name: str) -> Any:
        if name in ("_request", "_fixture"):  # not set yet (a copy): no fixture to look up
            raise AttributeError(name)
        return getattr(self._resolve(), name)


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
