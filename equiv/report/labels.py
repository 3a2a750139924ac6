"""What the report calls each compared quantity: shared by the view model and the plot data."""

GROUP_TITLES = {
    "activations": "activations",
    "loss": "loss",
    "grads": "gradients",
    "params": "parameters",
    "state": "state",
    "evaluation": "evaluation",
}
