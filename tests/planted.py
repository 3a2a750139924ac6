"""Planted changes that several test modules share (each a real edit of a real file)."""

from equiv.backends.implementations import ImplSource, Patch

#: dynamic_branching's reference taking the other branch at every step, none of them
#: ambiguous: a branch divergence at step 0, after which the comparison ends
OTHER_BRANCH = ImplSource(
    "cases.dynamic_branching.reference",
    (
        Patch(
            "branch = numerics.branch(choose_branch(prev_loss, cfg))",
            "branch = numerics.branch({'w2a': 'w2b', 'w2b': 'w2a'}[choose_branch(prev_loss, cfg)])",
        ),
    ),
)

#: keras_sequential on torch.eager with its learning rate doubled
DOUBLED_LR = ImplSource(
    "cases.keras_sequential.torch_impl",
    (
        Patch(
            'return torch.optim.SGD(params, lr=cfg["lr"])',
            'return torch.optim.SGD(params, lr=2 * cfg["lr"])',
        ),
    ),
)
