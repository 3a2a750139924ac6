"""The numpy backend: the reference itself, run as a backend.

Its float64 cells are the reference compared with itself (zero error by construction, shown as
the matrix's baseline row); its float32 cells are the reference computed in float32, which is
exactly the spread the tolerance policy is calibrated on. The reference's own correctness is
checked against central finite differences in ``tests/test_reference.py``.
"""

from __future__ import annotations

import numpy as np

from equiv.contract.backend import Backend
from equiv.reference.trainer import ReferenceTrainer


class NumpyBackend(Backend):
    id = "numpy"
    framework = "numpy"
    mode = "eager"
    impl_file = "reference"
    requires = ("numpy",)

    def build_trainer(self, spec, state, module):
        return ReferenceTrainer(spec, state, module=module)

    def to_native(self, array: np.ndarray) -> np.ndarray:
        return np.array(array, copy=True)

    def to_numpy(self, value) -> np.ndarray:
        return np.asarray(value)


def backends() -> list[Backend]:
    return [NumpyBackend()]
