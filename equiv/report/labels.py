"""What the report calls each compared quantity and each caveat's code: shared by the view model
and the plot data."""

from equiv.contract.records import NO_TRACE

GROUP_TITLES = {
    "activations": "activations",
    "loss": "loss",
    "grads": "gradients",
    "params": "parameters",
    "state": "state",
    "evaluation": "evaluation",
}

#: a caveat's code (``equiv.contract.records.Caveat``) -> its mark in the overview and the
#: problems list; a code not here is shown as it is
CAVEAT_LABELS = {
    NO_TRACE: "no compiled trace",
}
