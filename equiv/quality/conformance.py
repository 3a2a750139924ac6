"""The conformance kits: ready-made pytest suites that a backend adapter (``BackendConformance``)
or a case package (``CaseConformance``, at the end of this module) runs against itself.

A new adapter's package subclasses ``BackendConformance`` in its own tests and names the
backend id; pytest then collects every check below, parametrized over cases and dtypes::

    # my_package/tests/test_conformance.py
    from equiv.quality.conformance import BackendConformance

    class TestMyEager(BackendConformance):
        backend_id = "mine.eager"

The checks, each a separate test so that a failure names the broken part of the contract:

- discovery: the id is registered and its plugin loaded (a broken plugin fails here, with the
  registry's reason, rather than being skipped);
- availability: ``availability()`` returns None or a non-empty reason and never raises;
- conversion: ``to_numpy(to_native(a))`` gives back ``a`` bit for bit, its dtype (float64 must
  stay float64) and its shape, from C-ordered, transposed, strided, 0-d and empty arrays, and
  the native value does not alias the numpy input;
- mode transform: ``transform(fn)`` returns a callable computing what ``fn`` does, and a
  compiled mode traces once for repeated calls with new values of the same shapes;
- seeding: the implementation starts from the given arrays (its step-0 loss is the
  reference's, within the tolerance policy);
- records: canonical names, shapes and the cell's dtype; a record is a snapshot that later
  steps do not change;
- determinism: two fresh runs are bitwise equal (set ``deterministic = False`` to have a
  difference reported as an expected failure instead);
- parity: every case runs through ``equiv.running.runner.run_cell`` against the reference and
passes.

Runs are short (``steps = 20``) so the kit is quick; ``full_length = True`` on the class, the
environment variable ``EQUIV_CONFORMANCE_FULL=1`` or pytest's ``--equiv-steps N`` (equiv's
pytest plugin) choose the cases' own step counts or N. No framework is imported here.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from equiv.backends.implementations import ImplSource, Patch
from equiv.checking.diagnosis import first_difference
from equiv.contract.backend import Backend, CellSkip
from equiv.contract.records import DTYPES, CaseState, Cell, CellResult, StepRecord
from equiv.quality.alike import assert_train_alike  # noqa: F401 - equiv.testing's API

SHORT_STEPS = 20
FULL_ENV = "EQUIV_CONFORMANCE_FULL"


def transform_probe(a, b):  # no annotations: TorchScript would read them as types
    """A step-like function for ``Backend.transform``: operators only, so every framework's
    arrays support it, and exact in floating point on small integers, so every correct mode
    (fused or not) returns bitwise the same numbers."""
    return a * b + a - b


def round_trip_arrays(dtype: str) -> dict[str, np.ndarray]:
    """Arrays that a lossy or layout-confused conversion gets wrong."""
    dt = np.dtype(dtype)
    info = np.finfo(dt)
    rng = np.random.default_rng(1234)
    # 1 + 2**-40 is exact in float64 and rounds to 1 in float32: a float32 detour shows.
    special = np.array(
        [1 / 3, -0.0, 1 + 2.0**-40, np.pi, info.tiny, info.smallest_subnormal, info.max, -2.5],
        dtype=np.float64,
    ).astype(dt)
    matrix = rng.standard_normal((6, 5)).astype(dt)
    return {
        "scalar (0-d)": np.array(1 / 3, dtype=dt),
        "special values": special,
        "C-ordered (6, 5)": matrix,
        "transposed view (5, 6)": matrix.T,
        "strided view (3, 4)": matrix[::2, 1:],
        "3-d (2, 3, 4)": rng.standard_normal((2, 3, 4)).astype(dt),
        "empty (0, 4)": np.zeros((0, 4), dtype=dt),
    }


def canonical_problems(spec: Any, state: CaseState, record: Any) -> list[str]:
    """What is not canonical about a trainer's ``record()`` for a cell starting at ``state``:
    a StepRecord whose loss is a scalar and whose grads and params are numpy arrays of the
    cell's dtype, named ``spec.param_names`` and shaped as ``state.params``, and whose branch
    (branching cases) names a parameter. Empty when all is well."""
    if not isinstance(record, StepRecord):
        return [
            f"record() returned {type(record).__name__}, not an equiv.contract.records.StepRecord"
        ]
    dtype = np.dtype(state.dtype)
    problems = []
    loss = np.asarray(record.loss)
    if loss.shape != ():
        problems.append(f"loss has shape {loss.shape}; expected a scalar")
    if loss.dtype != dtype:
        problems.append(f"loss is {loss.dtype} in a {dtype} cell")
    for group in ("grads", "params"):
        arrays = getattr(record, group)
        if sorted(arrays) != sorted(spec.param_names):
            problems.append(f"{group} names {sorted(arrays)}; expected {sorted(spec.param_names)}")
        for name, value in arrays.items():
            want = state.params[name].shape if name in state.params else None
            if not isinstance(value, np.ndarray):
                problems.append(f"{group}/{name} is {type(value).__name__}, not a numpy array")
            elif value.dtype != dtype:
                problems.append(f"{group}/{name} is {value.dtype} in a {dtype} cell")
            elif want is not None and value.shape != want:
                problems.append(
                    f"{group}/{name} has shape {value.shape}, canonical {want} (a layout "
                    "conversion missing? kernels are (in, out))"
                )
    if spec.branching and record.branch not in spec.param_names:
        problems.append(f"branch {record.branch!r} names no parameter")
    return problems


def _steps(cls: type, config: pytest.Config) -> int | None:
    asked = config.getoption("--equiv-steps", default=None)
    if asked is not None:
        return int(asked)
    if cls.full_length or os.environ.get(FULL_ENV, "") not in ("", "0"):
        return None  # each case's own step count
    return cls.steps


class BackendConformance:
    """Subclass (named ``Test...``) and set ``backend_id`` to run the kit on an adapter."""

    #: the backend id under test, as registered through the ``equiv.backends`` entry point
    backend_id: str = ""
    #: case names to check (None: every case equiv knows)
    cases: tuple[str, ...] | None = None
    dtypes: tuple[str, ...] = DTYPES
    #: steps of the parity runs; None or ``full_length`` for each case's own count
    steps: int | None = SHORT_STEPS
    full_length: bool = False
    #: False when the framework is known not to be bitwise reproducible: a difference between
    #: two runs is then reported as an expected failure rather than a failure
    deterministic: bool = True
    determinism_steps: int = 5
    seed: int = 0

    # -- parametrization -------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """pytest calls this method of a test class for each of its tests."""
        from equiv.contract.case import all_cases

        if "case" in metafunc.fixturenames:
            names = list(all_cases())
            if self.cases is not None:
                unknown = [c for c in self.cases if c not in names]
                if unknown:
                    raise pytest.UsageError(f"{type(self).__name__}: unknown cases {unknown}")
                names = list(self.cases)
            metafunc.parametrize("case", names)
        if "dtype" in metafunc.fixturenames:
            metafunc.parametrize("dtype", list(self.dtypes))

    # -- fixtures --------------------------------------------------------------------------

    @pytest.fixture
    def registered(self) -> Backend:
        """The adapter as equiv's registry found it (failing, not skipping, if it is broken)."""
        from equiv.backends.registry import BrokenBackend, get_backend

        if not self.backend_id:
            pytest.fail(f"{type(self).__name__} sets no backend_id")
        try:
            backend = get_backend(self.backend_id)
        except KeyError as exc:
            pytest.fail(
                f"{exc.args[0]}. Is the package installed (pip install -e .), so that its "
                "'equiv.backends' entry point is registered?"
            )
        if isinstance(backend, BrokenBackend):
            pytest.fail(f"the registry could not load {self.backend_id}: {backend.reason}")
        return backend

    @pytest.fixture
    def backend(self, registered: Backend) -> Backend:
        """The adapter, available and configured as the runner configures it."""
        from equiv.backends.process import ProcessConfig
        from equiv.running.runner import RunOptions

        reason = registered.availability()
        if reason:
            pytest.skip(f"{self.backend_id} is not available here: {reason}")
        ProcessConfig.current().prepare(registered, RunOptions().threads)
        return registered

    # -- helpers ---------------------------------------------------------------------------

    def start(self, case: str, dtype: str) -> tuple[Any, CaseState]:
        """The case's spec and the canonical starting state of a (case, dtype) cell."""
        from equiv.contract.case import get_case

        spec = get_case(case)
        return spec, spec.make_state(self.seed, dtype)

    def trainer(self, backend: Backend, spec: Any, state: CaseState) -> Any:
        """Build a trainer as the runner does; a case the backend does not implement skips."""
        from equiv.backends.implementations import load_implementation

        try:
            return backend.build_trainer(spec, state, load_implementation(backend, spec))
        except CellSkip as exc:  # no implementation of the case, or the backend declines it
            pytest.skip(str(exc))

    def run(self, backend: Backend, spec: Any, state: CaseState, steps: int) -> list[StepRecord]:
        trainer = self.trainer(backend, spec, state)
        records = []
        for _ in range(steps):
            trainer.run_step()
            backend.synchronize()
            records.append(trainer.record())
        return records

    # -- the contract ----------------------------------------------------------------------

    def test_registered_under_its_id(self, registered: Backend) -> None:
        assert registered.id == self.backend_id
        described = registered.describe()
        assert described["id"] == self.backend_id
        assert {"framework", "mode", "available", "reason"} <= described.keys()

    def test_availability_returns_none_or_a_reason(self, registered: Backend) -> None:
        # The class's own method: the registry wraps the instance's so that a raise cannot
        # break ``equiv list``, which would hide the bug from this check.
        try:
            reason = type(registered).availability(registered)
        except Exception as exc:
            pytest.fail(f"availability() raised {exc!r}; it must return None or a reason")
        assert reason is None or (isinstance(reason, str) and reason), (
            f"availability() returned {reason!r}; expected None or a non-empty reason"
        )

    def test_round_trip_is_bit_exact(self, backend: Backend, dtype: str) -> None:
        for label, array in round_trip_arrays(dtype).items():
            source = array.copy(order="K")
            native = backend.to_native(source)
            back = backend.to_numpy(native)
            where = f"to_numpy(to_native(a)) for {label} {dtype} a"
            assert isinstance(back, np.ndarray), f"{where} is a {type(back).__name__}"
            assert back.dtype == array.dtype, f"{where} is {back.dtype}, not {array.dtype}"
            assert back.shape == array.shape, f"{where} has shape {back.shape}"
            assert back.tobytes() == array.tobytes(), f"{where} is not bitwise a: {back!r}"
            if source.size:
                source[...] = 7
                again = backend.to_numpy(native)
                assert again.tobytes() == array.tobytes(), (
                    f"to_native aliases its input ({label}): writing to the numpy array "
                    "changed the native value; the state a trainer starts from is shared"
                )

    def test_transform_returns_an_equivalent_callable(self, backend: Backend, dtype: str) -> None:
        values = [
            (np.array([[1.0, 2.0], [3.0, -4.0]]), np.array([[5.0, -6.0], [7.0, 8.0]])),
            (np.array([[0.0, 9.0], [-3.0, 2.0]]), np.array([[1.0, 1.0], [-2.0, 4.0]])),
            (np.array([[6.0, -1.0], [2.0, 2.0]]), np.array([[3.0, 0.0], [5.0, -7.0]])),
        ]
        traces_before = backend.traces
        fn = backend.transform(transform_probe)
        assert callable(fn), f"transform returned {fn!r}, not a callable"
        for a, b in values:
            a, b = a.astype(dtype), b.astype(dtype)
            na, nb = backend.to_native(a), backend.to_native(b)
            want = transform_probe(a, b)
            got = backend.to_numpy(fn(na, nb))
            plain = backend.to_numpy(transform_probe(na, nb))
            assert got.dtype == np.dtype(dtype), f"transformed result is {got.dtype}"
            assert np.array_equal(got, want), f"transformed fn gave {got}, expected {want}"
            assert np.array_equal(plain, want), f"untransformed fn gave {plain}"
        if backend.compiled:
            traces = backend.traces - traces_before
            assert traces <= 1, (
                f"{traces} traces for 3 calls with new values of the same shapes and dtype: "
                "a compiled mode must trace once and replay"
            )

    def test_starts_from_the_given_arrays(self, backend: Backend, case: str, dtype: str) -> None:
        from equiv.reference.trainer import ReferenceTrainer
        from equiv.tolerance.policy import calibrate

        spec, state = self.start(case, dtype)
        record = self.run(backend, spec, state, 1)[0]
        reference = ReferenceTrainer(spec, state.astype("float64"))
        reference.run_step()
        want = float(reference.record().loss)
        tol = calibrate(spec, self.seed, 1, dtype).tolerance("loss", 0)
        got = float(record.loss)
        assert abs(got - want) <= tol, (
            f"step-0 loss {got!r} vs the reference's {want!r} (tolerance {tol:.3g}): the "
            "implementation does not start from the given data and parameters, or computes "
            "another loss (sum vs mean?)"
        )

    def test_records_are_canonical_snapshots(self, backend: Backend, case: str, dtype: str) -> None:
        spec, state = self.start(case, dtype)
        first, second = self.run(backend, spec, state, 2)
        kept = {n: np.array(v, copy=True) for n, v in first.params.items()}
        problems = canonical_problems(spec, state, first)
        assert not problems, "; ".join(problems)
        for name, value in kept.items():
            assert first.params[name].tobytes() == value.tobytes(), (
                f"params/{name} of step 0 changed when step 1 ran: record() must return "
                "copies, not views of buffers that later steps update"
            )
        assert second is not first

    def test_two_runs_are_bitwise_equal(self, backend: Backend, case: str, dtype: str) -> None:
        spec, state = self.start(case, dtype)
        n = self.determinism_steps
        one, two = self.run(backend, spec, state, n), self.run(backend, spec, state, n)
        for t, (a, b) in enumerate(zip(one, two, strict=True)):
            diff = first_difference(a, b)
            if diff is None:
                continue
            message = f"two fresh runs differ at step {t} in {diff}"
            if not self.deterministic:
                pytest.xfail(f"declared non-deterministic: {message}")
            pytest.fail(message + " (set deterministic = False if the framework cannot be)")

    def test_case_passes(
        self, backend: Backend, case: str, dtype: str, request: pytest.FixtureRequest
    ) -> None:
        from equiv.contract.divergence import describe
        from equiv.running.runner import RunOptions, run_cell

        steps = _steps(type(self), request.config)
        # bitwise repetition is test_two_runs_are_bitwise_equal's to check, not this test's
        options = RunOptions.verdict_only(seed=self.seed, steps=steps)
        result = run_cell(Cell(case, self.backend_id, dtype), options, benchmark=False)
        if result.status == "skip":
            pytest.skip(result.reason)
        detail = f"{result.cell.id}: {result.status}: {result.reason}"
        if result.first_divergence:
            detail += f"\n{describe(result.first_divergence)}"
        if result.traceback:
            detail += f"\n{result.traceback}"
        assert result.status in ("pass", "explained"), detail
        retraced = [w for w in result.warnings if "retraced on every step" in w]
        assert not retraced, f"{result.cell.id}: {retraced[0]}"


# -- the case conformance kit ------------------------------------------------------------------

#: a planted bug: one (old, new) source change of an implementation module, or several
Plant = tuple[str, str] | Sequence[tuple[str, str]]


def plant_patches(plant: Plant) -> tuple[Patch, ...]:
    """A plant as ``equiv.backends.implementations.Patch``es: ``("old", "new")`` or a sequence of
    them."""
    pairs = [plant] if len(plant) == 2 and all(isinstance(p, str) for p in plant) else plant
    return tuple(Patch(str(old), str(new)) for old, new in pairs)  # type: ignore[misc]


def plant_problem(module: str, patches: tuple[Patch, ...]) -> str | None:
    """Why a plant cannot be applied to ``module``'s source (its target does not occur exactly
    once, or the result is not Python), found without running anything: a plant that breaks
    the import would otherwise count as caught."""
    found = importlib.util.find_spec(module)
    if found is None or not found.origin:
        return f"{module} has no source file"
    with open(found.origin, encoding="utf-8") as f:
        source = f.read()
    for patch in patches:
        count = source.count(patch.old)
        if count != 1:
            return f"the plant's target occurs {count} times in {module}: {patch.old!r}"
        source = source.replace(patch.old, patch.new)
    try:
        compile(source, module, "exec")
    except SyntaxError as exc:
        return f"the planted {module} is not valid Python: {exc}"
    return None


def assert_records_agree(ours: Any, theirs: Any, rel: float) -> None:
    """Two step records agree: the branch, the loss, and every parameter and non-trainable
    state array to ``rel`` of that array's largest magnitude. For a port's ``load_state``:
    loaded with the reference's state, its next step is the reference's next step."""
    assert ours.branch == theirs.branch, (ours.branch, theirs.branch)
    assert abs(ours.loss - theirs.loss) <= rel * abs(theirs.loss), (ours.loss, theirs.loss)
    for group in ("params", "state"):
        for name, value in getattr(theirs, group).items():
            scale = max(float(np.max(np.abs(value))), 1e-30)
            error = float(np.max(np.abs(getattr(ours, group)[name] - value)))
            assert error <= rel * scale, (group, name, error / scale)


def records_check(case: str, backend_id: str, dtype: str, seed: int, steps: int):
    """Build a trainer for (case, backend, dtype) as the runner does, run ``steps`` steps and
    return ("ran", the problems of its records) or ("skip", [why]). Runs in whatever process
    calls it: the kit calls it in a process of the backend's own where it needs one."""
    from equiv.backends.implementations import load_implementation
    from equiv.backends.process import ProcessConfig
    from equiv.backends.registry import get_backend
    from equiv.contract.case import get_case
    from equiv.contract.trainer import check_trainer
    from equiv.running.runner import RunOptions

    backend = get_backend(backend_id)
    reason = backend.availability()
    if reason:
        return "skip", [f"{backend_id} is not available here: {reason}"]
    spec = get_case(case)
    state = spec.make_state(seed, dtype)
    ProcessConfig.current().prepare(backend, RunOptions().threads)
    try:
        module = load_implementation(backend, spec)
        trainer = check_trainer(backend.build_trainer(spec, state, module), module.__name__)
    except CellSkip as exc:
        return "skip", [str(exc)]
    problems: list[str] = []
    for t in range(steps):
        trainer.run_step()
        backend.synchronize()
        problems += [f"step {t}: {p}" for p in canonical_problems(spec, state, trainer.record())]
    return "ran", problems


def _own_process_init(env: dict[str, str], hides: tuple[str, ...]) -> None:
    os.environ.update(env)
    for name in hides:  # as an equiv worker does (Backend.worker_hides)
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


#: one process per backend that needs its own, kept for the session (its imports are paid once)
_BACKEND_PROCESSES: dict[str, Any] = {}


def in_backend_process(backend: Backend, fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` here, or in a process of the backend's own (started with its
    ``worker_env``) when it cannot share this one: Keras on torch or jax picks its backend at
    import."""
    if not backend.needs_own_process:
        return fn(*args)
    pool = _BACKEND_PROCESSES.get(backend.id)
    if pool is None:
        import atexit
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(
            1,
            mp_context=mp.get_context("spawn"),
            initializer=_own_process_init,
            initargs=(dict(backend.worker_env), tuple(backend.worker_hides)),
        )
        atexit.register(pool.shutdown, cancel_futures=True)
        _BACKEND_PROCESSES[backend.id] = pool
    from concurrent.futures.process import BrokenProcessPool

    try:
        return pool.submit(fn, *args).result()
    except BrokenProcessPool:  # the process died (a crash): the next call starts a fresh one
        _BACKEND_PROCESSES.pop(backend.id, None)
        raise


def run_one_cell(cell: Cell, options: Any, impl: ImplSource | None = None) -> CellResult:
    """``run_cell`` here, or in an equiv worker when the backend needs a process of its own."""
    from equiv.backends.registry import get_backend
    from equiv.running.runner import run_cell
    from equiv.running.workers import WorkerSession

    backend = get_backend(cell.backend)
    if not backend.needs_own_process or backend.availability():
        return run_cell(cell, options, impl=impl, benchmark=False)
    session = WorkerSession(options, dict(backend.worker_env), backend.worker_hides)
    try:
        return session.run((cell, impl))
    finally:
        session.close()


@functools.cache
def _unplanted(cell: Cell, seed: int, steps: int | None) -> CellResult:
    """The cell without a plant, once per session: a plant is judged only where the case
    itself passes."""
    from equiv.running.runner import RunOptions

    return run_one_cell(cell, RunOptions.verdict_only(seed=seed, steps=steps))


class CaseConformance:
    """Subclass (named ``Test...``) in a case package's own tests and set ``case_name``::

        # my_package/tests/test_my_case.py
        from equiv.quality.conformance import CaseConformance

        class TestMyCase(CaseConformance):
            case_name = "my_case"
            plants = {"torch.eager": [("x @ w1", "x @ (2 * w1)")]}

    pytest then collects each check of the case's contract as its own test:

    - ``test_the_case_is_discovered``: equiv finds it (an installed package whose entry point
      fails is reported with the registry's reason, not skipped);
    - ``test_reference_matches_finite_differences``: the reference's hand-written gradients
      against central differences of its own loss, in float64, at sampled entries of every
      parameter (``equiv.reference.gradcheck``), one step into training;
    - ``test_draw_is_deterministic``: the same seed draws the same bits (whatever numpy's
      global generator holds), another seed draws other numbers, and the parameters come out
      under ``spec.param_names``, in that order;
    - ``test_every_parameter_gets_a_gradient``: the reference reports a finite float64
      gradient of each declared parameter's shape, and no other;
    - ``test_records_are_canonical[backend-dtype]``: every backend that implements the case
      (or ``backends``) builds a ``Trainer`` whose records have the canonical names, shapes and
      the cell's dtype, over ``record_steps`` steps;
    - ``test_planted_bug_is_caught[backend-i]``: each plant (``plants``: backend id -> a list
      of ``(old, new)`` source changes of that backend's implementation module, or of lists
      of them) makes the cell fail or error in ``run_cell`` where the unplanted cell passes; a
      plant that is not caught fails the test, as does one whose target is not in the source.
      A class without plants has no such test (not one skipped for an empty parameter set).

    No framework is imported here; a backend that needs its own process gets one.
    """

    case_name: str = ""
    #: backend ids whose implementation is checked (None: every registered backend that has
    #: an implementation module for the case)
    backends: tuple[str, ...] | None = None
    dtypes: tuple[str, ...] = DTYPES
    #: planted bugs, per backend id; each must be caught
    plants: Mapping[str, Sequence[Plant]] = {}
    plant_dtype: str = "float64"
    #: steps of the planted runs (None or ``full_length``: the case's own count)
    steps: int | None = SHORT_STEPS
    full_length: bool = False
    record_steps: int = 2
    #: entries of each parameter moved in the finite-difference check
    gradient_samples: int = 12
    seed: int = 0

    # -- parametrization -------------------------------------------------------------------

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A kit without plants hides ``test_planted_bug_is_caught``: parametrized over no
        plant, pytest would report it as a skip ("got empty parameter set"), noise in every
        case package that plants nothing. A subclass that plants gets it back."""
        super().__init_subclass__(**kwargs)
        name = "test_planted_bug_is_caught"
        if name in cls.__dict__:  # the subclass's own definition
            return
        if any(len(items) for items in cls.plants.values()):
            # the nearest definition up the MRO, skipping the ones hidden here
            test = next(k.__dict__[name] for k in cls.__mro__ if k.__dict__.get(name))
            setattr(cls, name, test)
        else:
            setattr(cls, name, None)

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "backend_id" in metafunc.fixturenames:
            metafunc.parametrize("backend_id", self.backend_ids())
        if "dtype" in metafunc.fixturenames:
            metafunc.parametrize("dtype", list(self.dtypes))
        if "plant" in metafunc.fixturenames:
            plants = [(b, i) for b, items in self.plants.items() for i in range(len(items))]
            metafunc.parametrize("plant", plants, ids=[f"{b}-{i}" for b, i in plants])

    def backend_ids(self) -> list[str]:
        from equiv.backends.registry import BrokenBackend, all_backends

        found = all_backends()
        if self.backends is not None:
            unknown = [b for b in self.backends if b not in found]
            if unknown:
                raise pytest.UsageError(f"{type(self).__name__}: unknown backends {unknown}")
            return list(self.backends)
        try:
            spec = self.case_spec()
        except (Exception, pytest.fail.Exception):  # test_the_case_is_discovered says why
            return []
        return [
            b.id
            for b in found.values()
            if not isinstance(b, BrokenBackend) and _has_module(b.implementation_module(spec))
        ]

    # -- the case --------------------------------------------------------------------------

    def case_spec(self) -> Any:
        """The case under test as equiv discovered it (failing, not skipping, if it is not)."""
        from equiv.contract.case import get_case

        if not self.case_name:
            pytest.fail(f"{type(self).__name__} sets no case_name")
        try:
            return get_case(self.case_name)
        except KeyError as exc:
            pytest.fail(
                f"{exc.args[0]}. Is the case's package installed (pip install -e .), so that "
                "its 'equiv.cases' entry point is registered?"
            )

    def reference_module(self, spec: Any) -> Any:
        """The case's numpy reference (the module ``spec.module_name("reference")``); a case
        whose reference is a port has none, and what checks only it skips."""
        if spec.reference_port is not None:
            pytest.skip(
                f"{spec.name} has no numpy reference: its reference is the port "
                f"{spec.reference_port} (docs/port-reference.md)"
            )
        return importlib.import_module(spec.module_name("reference"))

    def reference_at(self, spec: Any, step: int) -> tuple[Any, dict, dict, dict, Any]:
        """(module, params, data, config, prev_loss) as the reference sees them at ``step``
        (after ``step`` of its own float64 steps)."""
        from equiv.reference.batching import step_data
        from equiv.reference.trainer import ReferenceTrainer

        module = self.reference_module(spec)
        state = spec.make_state(self.seed, "float64")
        trainer = ReferenceTrainer(spec, state, module=module)
        for _ in range(step):
            trainer.run_step()
        params = {k: np.array(v, dtype=np.float64) for k, v in trainer.params.items()}
        data = step_data(state.data, state.config, step)
        return module, params, data, state.config, trainer.prev_loss

    # -- the contract ----------------------------------------------------------------------

    def test_the_case_is_discovered(self) -> None:
        from equiv.contract.case import case_origin

        spec = self.case_spec()
        assert spec.name == self.case_name
        assert case_origin(spec.name)

    def test_reference_matches_finite_differences(self) -> None:
        from equiv.reference.gradcheck import check_gradients

        spec = self.case_spec()
        # one step in: a branching case has a real previous loss, the state is not the draw
        module, params, data, cfg, prev = self.reference_at(spec, 1)
        _, grads, _ = module.forward_backward(params, data, cfg, prev)

        def loss(moved: dict[str, np.ndarray]) -> float:
            return float(module.forward_backward(moved, data, cfg, prev)[0])

        checked = check_gradients(
            loss, params, {n: grads[n] for n in spec.param_names}, samples=self.gradient_samples
        )
        assert checked >= len(spec.param_names)

    def test_draw_is_deterministic(self) -> None:
        spec = self.case_spec()
        states = []
        for global_seed in (1, 2):  # a draw that reads numpy's global generator differs here
            np.random.seed(global_seed)
            try:
                states.append(spec.make_state(self.seed, "float64"))
            except ValueError as exc:  # make_state's check of the parameter names
                pytest.fail(f"{exc} (expected {spec.param_names}, in that order)")
        one, two = states
        assert tuple(one.params) == tuple(spec.param_names)
        for group in ("data", "params"):
            a, b = getattr(one, group), getattr(two, group)
            assert list(a) == list(b), f"{group} names differ between two draws"
            for name in a:
                assert a[name].tobytes() == b[name].tobytes(), (
                    f"{group}/{name} differs between two draws of seed {self.seed}: the draw "
                    "must take every number from the generator it is given (no np.random.*, "
                    "no framework RNG)"
                )
        other = spec.make_state(self.seed + 1, "float64")
        assert any(one.data[n].tobytes() != other.data[n].tobytes() for n in one.data) or any(
            one.params[n].tobytes() != other.params[n].tobytes() for n in one.params
        ), (
            f"seeds {self.seed} and {self.seed + 1} draw the same state: the draw ignores its "
            "generator"
        )

    def test_every_parameter_gets_a_gradient(self) -> None:
        spec = self.case_spec()
        if spec.reference_port is not None:  # the reference port's first step
            from equiv.backends.reference_port import reference_trainer

            state = spec.make_state(self.seed, "float64")
            trainer = reference_trainer(spec, state)
            trainer.run_step()
            params, grads = state.params, trainer.record().grads
        else:
            module, params, data, cfg, prev = self.reference_at(spec, 0)  # the drawn state
            _, grads, _ = module.forward_backward(params, data, cfg, prev)
        assert sorted(grads) == sorted(spec.param_names), (
            f"the reference's gradients are named {sorted(grads)}; the case declares "
            f"{sorted(spec.param_names)}"
        )
        for name in spec.param_names:
            g = np.asarray(grads[name])
            assert g.shape == params[name].shape, (
                f"grads/{name} has shape {g.shape}; the parameter's is {params[name].shape}"
            )
            assert g.dtype == np.float64, f"grads/{name} is {g.dtype} in float64"
            assert np.all(np.isfinite(g)), f"grads/{name} is not finite"

    def test_records_are_canonical(self, backend_id: str, dtype: str) -> None:
        from equiv.backends.registry import get_backend

        spec = self.case_spec()
        args = (spec.name, backend_id, dtype, self.seed, self.record_steps)
        outcome, problems = in_backend_process(get_backend(backend_id), records_check, *args)
        if outcome == "skip":
            pytest.skip(problems[0])
        assert not problems, f"{backend_id} {dtype}: " + "; ".join(problems)

    def test_planted_bug_is_caught(
        self, plant: tuple[str, int], request: pytest.FixtureRequest
    ) -> None:
        from equiv.backends.registry import get_backend

        backend_id, index = plant
        spec = self.case_spec()
        backend = get_backend(backend_id)
        reason = backend.availability()
        if reason:
            pytest.skip(f"{backend_id} is not available here: {reason}")
        module = backend.implementation_module(spec)
        patches = plant_patches(self.plants[backend_id][index])
        problem = plant_problem(module, patches)
        assert problem is None, problem
        steps = _steps(type(self), request.config)
        cell = Cell(spec.name, backend_id, self.plant_dtype)
        unplanted = _unplanted(cell, self.seed, steps)
        if unplanted.status == "skip":
            pytest.skip(f"{cell.id}: {unplanted.reason}")
        assert unplanted.status in ("pass", "explained"), (
            f"{cell.id} does not pass without the plant ({unplanted.status}: "
            f"{unplanted.reason}): a plant can only be judged where the case passes"
        )
        from equiv.running.runner import RunOptions

        options = RunOptions.verdict_only(seed=self.seed, steps=steps)
        planted = run_one_cell(cell, options, ImplSource(module, patches))
        assert planted.status in ("fail", "error"), (
            f"plant {index} of {backend_id} ({patches}) was not caught: {cell.id} is "
            f"{planted.status} with it. The case does not observe what the plant changes (a "
            "quantity not compared, too few steps?), or the plant changes nothing"
        )


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
