"""dynamic_branching: the seed's "Dynamic Computation Graphs" program.

w1 (D_in, H), w2a and w2b (H, D_out). Each step uses w2a if the previous step's loss is below
the threshold (5.0), else w2b; relu hidden layer, sum of squared errors, gradient descent with
lr 1e-6 on w1 and on the w2 that was used (the other one's gradient is zero and it stays put).
The first step has no previous loss: the seed's static version starts from prev_loss = 5.0,
which is not below 5.0, so step 0 takes w2b.

With these numbers the loss falls through 5.0 near step 190 and then the branch alternates:
w2a, untrained, gives a huge loss, so the next step goes back to w2b. Both branches are taken.
The branch at every step is a compared quantity.
"""

from equiv.case import CaseSpec
from equiv.flops import two_layer_step_flops
from equiv.support.draws import regression_data, standard_normal

CONFIG = {
    "N": 64,
    "D_in": 1000,
    "H": 100,
    "D_out": 10,
    "lr": 1e-6,
    "threshold": 5.0,
    "initial_prev_loss": 5.0,
    "optimizer": "sgd",
}


def draw(rng, cfg):
    d_in, h, d_out = cfg["D_in"], cfg["H"], cfg["D_out"]
    data = regression_data(rng, cfg)
    return data, standard_normal(rng, {"w1": (d_in, h), "w2a": (h, d_out), "w2b": (h, d_out)})


SPEC = CaseSpec(
    name="dynamic_branching",
    title="Data-dependent control flow: pick w2a or w2b from the previous loss",
    seed_source='"Dynamic Computation Graphs"',
    summary="w2 = w2a if prev_loss < 5.0 else w2b; relu MLP; sum of squares; SGD",
    default_steps=500,
    config=CONFIG,
    param_names=("w1", "w2a", "w2b"),
    draw=draw,
    branching=True,
    flops_per_step=two_layer_step_flops,
)
