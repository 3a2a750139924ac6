"""static_graph_step: the seed's "Static Computation Graphs" (torch.jit.script) and the TF 1.0 /
TF 2.0 static-graph programs.

The same problem as dynamic_branching, but the *whole* step (branch on the previous loss,
forward, loss, backward, update) is built once and replayed: a scripted or compiled function,
a ``tf.function``, a TF1 graph. In compiled modes the branch lives inside the compiled code
(``if`` in TorchScript, ``torch.cond``, ``tf.cond``); eager modes run the same step as the
control. Compiled cells record how often they were traced; a retrace on every step is a warning.
"""

from dataclasses import replace

from cases.dynamic_branching.spec import CONFIG
from cases.dynamic_branching.spec import SPEC as DYNAMIC_BRANCHING

#: dynamic_branching's problem: its draw, parameters, steps, branching and FLOPs
SPEC = replace(
    DYNAMIC_BRANCHING,
    name="static_graph_step",
    title="The whole training step, branch included, built once and replayed",
    seed_source=(
        '"Static Computation Graphs" (torch.jit.script), TF 1.0 Session, TF 2.0 tf.function'
    ),
    summary="dynamic_branching's step as one compiled graph; trace counts recorded",
    config=dict(CONFIG),
)
