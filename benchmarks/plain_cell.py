"""The floor for one cell: what a person would write by hand to check one implementation.

The same torch implementation and the same numpy reference as equiv's cell
``two_layer_mlp-torch.eager-float64``, run in a loop and compared at every step (loss,
gradients, parameters) with a fixed tolerance: no calibration, no report, no worker process.
``benchmarks/test_harness.py`` times this script and ``equiv run`` for that cell, both as whole
processes, and reports the ratio.

    python benchmarks/plain_cell.py [STEPS]
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from cases.two_layer_mlp import reference, torch_impl
from cases.two_layer_mlp.spec import SPEC
from equiv.backends.registry import get_backend


def main(steps: int) -> int:
    torch.set_num_threads(1)
    state = SPEC.make_state(0, "float64")
    trainer = torch_impl.build(state, get_backend("torch.eager"))
    params = {k: v.copy() for k, v in state.params.items()}
    lr = state.config["lr"]
    worst = 0.0
    for _ in range(steps):
        trainer.run_step()
        got = trainer.record()
        loss, grads, _ = reference.forward_backward(params, state.data, state.config)
        params = {k: params[k] - lr * grads[k] for k in params}
        pairs = [(got.loss, loss)] + [(got.grads[k], grads[k]) for k in grads]
        pairs += [(got.params[k], params[k]) for k in params]
        for a, b in pairs:
            scale = max(float(np.max(np.abs(b))), 1e-300)
            worst = max(worst, float(np.max(np.abs(np.asarray(a) - b))) / scale)
    print(f"{steps} steps, largest relative difference {worst:.3g}")
    return 0 if worst < 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else SPEC.default_steps))
