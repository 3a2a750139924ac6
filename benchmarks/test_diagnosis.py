"""What diagnosing a failing cell costs against running it (pytest-benchmark; not part of the
test suite):

    .venv/bin/python -m pytest benchmarks/test_diagnosis.py -p no:cacheprovider -s

Each cell runs once to fill the calibration store (its variants' calibrations included), then
is timed with diagnosis on. The ratio of its ``diagnosis`` phase to the rest of the cell (the
same run's imports, calibration from the warm store and lockstep; no benchmark rounds, so the
ratio is an upper bound of the one in a run that times its cells) goes to ``extra_info``; the
target is at most 10 (docs/verdicts.md, Diagnosis).

- ``resnet18``: Keras's BatchNormalization epsilon left at 1e-3 in the Keras port (3 steps,
  float32, keras.tensorflow);
- ``transformer``: transformer_block_defaults on keras.tensorflow in float64 with no
  declaration (20 steps; the largest set, seven keys).
"""

from __future__ import annotations

import pytest

from equiv.backends.implementations import ImplSource
from equiv.quality.mistakes import MISTAKES, run_diagnosed
from equiv.records import Cell

MISTAKE = {m.id: m for m in MISTAKES}
CELLS = {
    "resnet18": (
        Cell("resnet18", "keras.tensorflow", "float32"),
        ImplSource("cases.resnet18.keras_impl", MISTAKE["keras-resnet18-bn-eps"].patches),
        {"steps": 3},
    ),
    "transformer": (
        Cell("transformer_block_defaults", "keras.tensorflow", "float64"),
        None,
        {"declarations": False},
    ),
}


@pytest.mark.parametrize("name", list(CELLS))
def test_diagnosis_cost(benchmark, name, tmp_path):
    cell, impl, options = CELLS[name]
    options = {**options, "calibration_dir": str(tmp_path / "cache")}
    first = run_diagnosed(cell, impl, **options)  # fills the store; not timed
    if isinstance(first, str):
        pytest.skip(first)
    results = []
    benchmark.group = "diagnosis of one failing cell, warm calibration store"
    benchmark.pedantic(
        lambda: results.append(run_diagnosed(cell, impl, **options)), rounds=1, iterations=1
    )
    result = results[-1]
    assert result.diagnosis["outcome"] == "found"
    phases = dict(result.phases_s)
    diagnosis = phases.pop("diagnosis")
    rest = sum(phases.values())
    benchmark.extra_info.update(
        {"diagnosis_s": round(diagnosis, 2), "cell_s": round(rest, 2), "ratio": diagnosis / rest}
    )
    print(f"\n{name}: diagnosis {diagnosis:.1f} s, cell {rest:.1f} s: {diagnosis / rest:.2f}x")
