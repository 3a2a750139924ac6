"""Steady-state step timing through pytest-benchmark.

Inside pytest the matrix test hands over its own ``benchmark`` fixture, so the timings also land
in pytest-benchmark's table and ``--benchmark-json``. From the command line and in worker
processes there is no pytest session, so ``standalone_fixture`` builds the same
``BenchmarkFixture`` by hand: the timing loop and the statistics are pytest-benchmark's either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from pytest_benchmark.fixture import BenchmarkFixture
from pytest_benchmark.utils import NameWrapper


class _QuietLogger:
    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    info = warning = error = debug


def standalone_fixture(name: str) -> BenchmarkFixture:
    node = SimpleNamespace(name=name, nodeid=name)
    return BenchmarkFixture(
        node,
        disable_gc=False,
        timer=NameWrapper(time.perf_counter),
        min_rounds=1,
        min_time=0.0,
        max_time=1.0,
        precision=None,
        confidence=None,
        warmup=False,
        warmup_iterations=0,
        calibration_precision=10,
        add_stats=lambda stats: None,
        logger=_QuietLogger(),
        warner=lambda *a, **k: None,
        disabled=False,
        cprofile=False,
        cprofile_loops=None,
        cprofile_dump=None,
        group="equiv",
    )


def benchmark_steps(
    step: Callable[[], None],
    *,
    rounds: int,
    warmup_rounds: int,
    fixture: BenchmarkFixture | None = None,
    name: str = "step",
) -> dict[str, Any] | None:
    """Time ``step`` (one training step, synchronised) for ``rounds`` rounds after warm-up."""
    fixture = fixture or standalone_fixture(name)
    fixture.pedantic(step, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
    if fixture.stats is None:  # pytest --benchmark-disable
        return None
    s = fixture.stats.stats
    return {
        "median_s": s.median,
        "iqr_s": s.iqr,
        "mean_s": s.mean,
        "stddev_s": s.stddev,
        "min_s": s.min,
        "max_s": s.max,
        "rounds": s.rounds,
        "warmup_rounds": warmup_rounds,
    }
