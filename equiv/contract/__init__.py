"""What a case, a backend adapter, a trainer and a step record are: the types every other layer
speaks, and the discovery of cases and plugins. Imports nothing else of equiv.

``equiv.contract`` was the trainer contract's module before this package; its names stay here.
"""

from equiv.contract.trainer import (
    CASE_API,
    HARNESS_CALLS,
    NotATrainer,
    Trainer,
    check_trainer,
    declared_helpers,
)

__all__ = [
    "CASE_API",
    "HARNESS_CALLS",
    "NotATrainer",
    "Trainer",
    "check_trainer",
    "declared_helpers",
]
