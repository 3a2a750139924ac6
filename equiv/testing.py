"""The conformance kit: a ready-made pytest suite that a backend adapter runs against itself.

A new adapter's package subclasses ``BackendConformance`` in its own tests and names the
backend id; pytest then collects every check below, parametrized over cases and dtypes::

    # my_package/tests/test_conformance.py
    from equiv.testing import BackendConformance

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
- parity: every case runs through ``equiv.runner.run_cell`` against the reference and passes.

Runs are short (``steps = 20``) so the kit is quick; ``full_length = True`` on the class, the
environment variable ``EQUIV_CONFORMANCE_FULL=1`` or pytest's ``--equiv-steps N`` (equiv's
pytest plugin) choose the cases' own step counts or N. No framework is imported here.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from equiv.backends.base import Backend, CellSkip
from equiv.diagnosis import first_difference
from equiv.records import DTYPES, CaseState, Cell, StepRecord

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


def _steps(cls: type[BackendConformance], config: pytest.Config) -> int | None:
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
        from equiv.case import all_cases

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
        from equiv.registry import BrokenBackend, get_backend

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
        from equiv.process import ProcessConfig
        from equiv.runner import RunOptions

        reason = registered.availability()
        if reason:
            pytest.skip(f"{self.backend_id} is not available here: {reason}")
        ProcessConfig.current().prepare(registered, RunOptions().threads)
        return registered

    # -- helpers ---------------------------------------------------------------------------

    def start(self, case: str, dtype: str) -> tuple[Any, CaseState]:
        """The case's spec and the canonical starting state of a (case, dtype) cell."""
        from equiv.case import get_case

        spec = get_case(case)
        return spec, spec.make_state(self.seed, dtype)

    def trainer(self, backend: Backend, spec: Any, state: CaseState) -> Any:
        """Build a trainer as the runner does; a case the backend does not implement skips."""
        from equiv.implementations import load_implementation

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
        from equiv.reference import ReferenceTrainer
        from equiv.tolerance import calibrate

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
        assert isinstance(first, StepRecord), f"record() returned {type(first).__name__}"
        loss = np.asarray(first.loss)
        assert loss.shape == (), f"loss has shape {loss.shape}; expected a scalar"
        assert loss.dtype == np.dtype(dtype), f"loss is {loss.dtype} in a {dtype} cell"
        for group in ("grads", "params"):
            arrays = getattr(first, group)
            assert tuple(sorted(arrays)) == tuple(sorted(spec.param_names)), (
                f"{group} names {sorted(arrays)}; expected {sorted(spec.param_names)}"
            )
            for name, value in arrays.items():
                want = state.params[name].shape
                assert isinstance(value, np.ndarray), f"{group}/{name} is {type(value).__name__}"
                assert value.dtype == np.dtype(dtype), f"{group}/{name} is {value.dtype}"
                assert value.shape == want, (
                    f"{group}/{name} has shape {value.shape}, canonical {want} (a layout "
                    "conversion missing? kernels are (in, out))"
                )
        if spec.branching:
            assert first.branch in spec.param_names, f"branch {first.branch!r}"
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
        from equiv.divergence import describe
        from equiv.runner import RunOptions, run_cell

        steps = _steps(type(self), request.config)
        options = RunOptions(seed=self.seed, steps=steps, bench_rounds=0, keep_trajectories=False)
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
