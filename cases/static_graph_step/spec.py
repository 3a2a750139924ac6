"""static_graph_step: the seed's "Static Computation Graphs" (torch.jit.script) and the TF 1.0 /
TF 2.0 static-graph programs.

The same problem as dynamic_branching, but the *whole* step (branch on the previous loss,
forward, loss, backward, update) is built once and replayed: a scripted or compiled function,
a ``tf.function``, a TF1 graph. In compiled modes the branch lives inside the compiled code
(``if`` in TorchScript, ``torch.cond``, ``tf.cond``); eager modes run the same step as the
control. Compiled cells record how often they were traced; a retrace on every step is a warning.
"""

from cases.dynamic_branching.spec import CONFIG, draw
from equiv.case import CaseSpec
from equiv.flops import two_layer_step_flops

SPEC = CaseSpec(
    name="static_graph_step",
    title="The whole training step, branch included, built once and replayed",
    seed_source=(
        '"Static Computation Graphs" (torch.jit.script), TF 1.0 Session, TF 2.0 tf.function'
    ),
    summary="dynamic_branching's step as one compiled graph; trace counts recorded",
    default_steps=500,
    config=dict(CONFIG),
    param_names=("w1", "w2a", "w2b"),
    draw=draw,
    branching=True,
    flops_per_step=two_layer_step_flops,
)
