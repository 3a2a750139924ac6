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

from dataclasses import replace

import numpy as np

from cases.two_layer_mlp import spec as two_layer_mlp


def draw(rng, cfg):
    """two_layer_mlp's draw, w1 scaled by 1/sqrt(D_in)."""
    data, params = two_layer_mlp.draw(rng, cfg)
    return data, {**params, "w1": params["w1"] / np.sqrt(cfg["D_in"])}


#: two_layer_mlp's config, parameters, steps and FLOPs
SPEC = replace(
    two_layer_mlp.SPEC,
    name="sigmoid_custom_op",
    title="Sigmoid as a custom op with a hand-written backward",
    seed_source='"new functions" and "Improvement" (torch.autograd.Function)',
    summary="sigmoid(x @ w1) @ w2 with a custom backward y * (1 - y); sum of squares; SGD",
    draw=draw,
    notes=("w1 is drawn with std 1/sqrt(D_in) (not 1) so the sigmoid does not saturate.",),
)
