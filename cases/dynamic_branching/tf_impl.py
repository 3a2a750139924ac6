"""dynamic_branching in TensorFlow: the branch is Python, deciding between two steps.

TF 2.0 (eager, ``tf.function``, XLA): Python reads the previous loss (``float(loss)``) and
passes the chosen ``tf.Variable`` to the step (two_layer_mlp's, with its forward pass and SGD);
the step is compiled once and serves both branches, since variables of one shape and dtype
share a trace. The unused w2 is not on the tape: its gradient is reported as zeros and it is
not updated.
TF 1.0 (v1graph): the graph is static, so it holds one train op per branch (sharing w1 and the
placeholders) and Python chooses which one ``Session.run`` runs: the TF1 form of dynamic
control flow. static_graph_step puts the branch inside the graph instead.
"""

from cases.two_layer_mlp.tf_impl import SGD, forward_loss, make_train_step
from equiv.support import tf as support
from equiv.support.records import step_record, with_zero_grads

BRANCHES = ("w2a", "w2b")


class Branching:
    """What both trainers add: the previous loss picks the branch; the record has zeros for
    the w2 the step did not use."""

    def load_prev_loss(self, value):
        """The loaded state's previous loss decides the next branch (``load_state``)."""
        self.prev_loss = float(value)

    def choose_branch(self):
        self.branch = "w2a" if self.prev_loss < self.threshold else "w2b"
        return self.branch

    def branch_record(self, loss, g1, g2, params):
        grads = with_zero_grads({"w1": g1, self.branch: g2}, params)
        return step_record(self.backend.to_numpy, loss, grads, params, self.branch)


class Trainer(Branching, support.Trainer):
    def __init__(self, state, backend):
        super().__init__(state, backend, make_train_step, SGD)
        self.threshold = state.config["threshold"]
        self.prev_loss = state.config["initial_prev_loss"]

    def run_step(self):
        branch = self.choose_branch()
        loss, (g1, g2) = self.step(self.x, self.y, self.weights["w1"], self.weights[branch])
        self.prev_loss = float(loss)
        self.last = (loss, g1, g2)

    def record(self):
        params = {n: self.backend.to_numpy(w) for n, w in self.weights.items()}
        return self.branch_record(*self.last, params)


class GraphTrainer(Branching, support.GraphTrainer):
    """TF 1.0: one graph with a train op per branch; Python picks the op to run."""

    def __init__(self, state, backend):
        super().__init__(state, backend, forward_loss, SGD)
        self.threshold = state.config["threshold"]
        self.prev_loss = state.config["initial_prev_loss"]

    def train_ops(self, x, y, optimizer):
        ops = {}
        for branch in BRANCHES:
            weights = [self.weights["w1"], self.weights[branch]]
            loss = self.forward_loss(x, y, *weights)
            ops[branch] = support.train_op(loss, weights, optimizer.updates)
        return ops

    def run_step(self):
        branch = self.choose_branch()
        loss, (g1, g2), _ = self.sess.run(self.fetches[branch], feed_dict=self.feed)
        self.prev_loss = float(loss)
        self.last = (loss, g1, g2)

    def record(self):
        return self.branch_record(*self.last, self.sess.run(self.weights))


def build(state, backend):
    if backend.mode == "v1graph":
        return GraphTrainer(state, backend)
    return Trainer(state, backend)
