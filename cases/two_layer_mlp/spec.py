"""two_layer_mlp: the seed's "Fundamental Concepts" and "Autograd" programs.

x (N, D_in), y (N, D_out), w1 (D_in, H), w2 (H, D_out), no biases; relu hidden layer;
loss = sum((relu(x w1) w2 - y)^2); plain gradient descent with lr 1e-6, 500 steps. All drawn
as the seed draws them (``torch.randn``: standard normal), but from the harness's generator.
"""

from equiv.case import CaseSpec
from equiv.flops import two_layer_step_flops
from equiv.support.draws import regression_data, standard_normal

CONFIG = {"N": 64, "D_in": 1000, "H": 100, "D_out": 10, "lr": 1e-6, "optimizer": "sgd"}


def draw(rng, cfg):
    d_in, h, d_out = cfg["D_in"], cfg["H"], cfg["D_out"]
    data = regression_data(rng, cfg)
    return data, standard_normal(rng, {"w1": (d_in, h), "w2": (h, d_out)})


SPEC = CaseSpec(
    name="two_layer_mlp",
    title="Two-layer MLP, sum-of-squares loss, manual gradient descent",
    seed_source='"Fundamental Concepts" (hand-written backward) and "Autograd"',
    summary="relu(x @ w1) @ w2, loss = sum of squared errors, w -= lr * grad",
    default_steps=500,
    config=CONFIG,
    param_names=("w1", "w2"),
    draw=draw,
    flops_per_step=two_layer_step_flops,
)
