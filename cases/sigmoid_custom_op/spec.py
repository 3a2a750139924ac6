"""sigmoid_custom_op: the seed's "new functions" and "Improvement" programs.

As two_layer_mlp, with a sigmoid hidden activation written as a custom op with a hand-written
backward (``torch.autograd.Function`` in the seed). Loss: sum of squared errors; SGD, lr 1e-6.

Initial scale (a deliberate change from the seed): the seed draws w1 ~ N(0, 1), so
x @ w1 ~ N(0, D_in) = N(0, 1000): |pre-activation| is about 32, the sigmoid saturates and
y * (1 - y) underflows towards 0 for nearly every unit, so a wrong custom backward would produce
(almost) the same zero gradients as a right one. Here w1 ~ N(0, 1/D_in), so the
pre-activations are ~N(0, 1) and y * (1 - y) is between 0.1 and 0.25 for most units: every
gradient really flows through the custom backward. ``tests/test_cases.py`` checks this.
"""

import numpy as np

from equiv.case import CaseSpec
from equiv.flops import two_layer_step_flops

CONFIG = {"N": 64, "D_in": 1000, "H": 100, "D_out": 10, "lr": 1e-6, "optimizer": "sgd"}


def draw(rng, cfg):
    n, d_in, h, d_out = cfg["N"], cfg["D_in"], cfg["H"], cfg["D_out"]
    data = {"x": rng.standard_normal((n, d_in)), "y": rng.standard_normal((n, d_out))}
    params = {
        "w1": rng.standard_normal((d_in, h)) / np.sqrt(d_in),
        "w2": rng.standard_normal((h, d_out)),
    }
    return data, params


SPEC = CaseSpec(
    name="sigmoid_custom_op",
    title="Sigmoid as a custom op with a hand-written backward",
    seed_source='"new functions" and "Improvement" (torch.autograd.Function)',
    summary="sigmoid(x @ w1) @ w2 with a custom backward y * (1 - y); sum of squares; SGD",
    default_steps=500,
    config=CONFIG,
    param_names=("w1", "w2"),
    draw=draw,
    flops_per_step=two_layer_step_flops,
    notes=("w1 is drawn with std 1/sqrt(D_in) (not 1) so the sigmoid does not saturate.",),
)
