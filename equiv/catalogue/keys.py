"""The standard vocabulary of variant keys: what each config key means, in every case and port
that reads it.

A case's config holds its reference's settings under these names; a declared explanation or a
catalogue entry overrides them. A key means the same thing wherever it appears, so one
catalogue entry (``equiv.catalogue.entries``) applies to every case whose config has the key,
and a case that uses the keys gets diagnosis for free (docs/adding-a-case.md). A test holds
every declaration and every entry of equiv and its example package to this list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    name: str
    meaning: str
    #: who reads it: "optimizer" keys are applied by equiv's own update rule
    #: (``equiv.optim``), so they are expressible on any reference, a port included;
    #: "model" keys are read by a case's numpy reference (and by a reference port that lists
    #: them in ``VARIANT_KEYS``); "harness" keys are read by equiv itself
    reader: str


KEYS: dict[str, Key] = {
    k.name: k
    for k in (
        Key("ln_eps", "LayerNorm's epsilon, added to the variance (torch 1e-5)", "model"),
        Key("bn_eps", "BatchNorm's epsilon, added to the batch variance (torch 1e-5)", "model"),
        Key(
            "bn_momentum",
            "BatchNorm's running-statistics momentum in torch's form: running = (1 - m) "
            "running + m batch (torch 0.1; Keras's momentum=0.99 is m = 0.01)",
            "model",
        ),
        Key(
            "bn_unbiased_running_var",
            "whether the running variance is updated with the unbiased batch variance "
            "n/(n-1) (torch: True) or the biased one (Keras, Flax: False)",
            "model",
        ),
        Key(
            "bn_variance",
            "how a batch's variance is computed: 'two_pass' mean((x - mean)^2), 'one_pass' "
            "mean(x^2) - mean^2",
            "model",
        ),
        Key("gelu", "GELU's form: 'exact' (erf) or 'tanh' (the approximation)", "model"),
        Key(
            "gelu_inv_sqrt2",
            "'float32': the exact GELU's 1/sqrt(2) rounded to float32 (TensorFlow in float64)",
            "model",
        ),
        Key(
            "loss_reduction",
            "how per-element losses become the loss: 'mean' (torch's and Keras's default) or 'sum'",
            "model",
        ),
        Key(
            "optimizer",
            "the update rule: 'sgd', 'adam', 'adamw' (torch's forms) or 'adam_epsilon_hat', "
            "'adamw_epsilon_hat' (the paper's epsilon-hat form, Keras's)",
            "optimizer",
        ),
        Key("lr", "the learning rate", "optimizer"),
        Key(
            "momentum",
            "SGD's momentum in torch's form buffer = momentum * buffer + g",
            "optimizer",
        ),
        Key("beta_1", "Adam's first-moment decay", "optimizer"),
        Key("beta_2", "Adam's second-moment decay", "optimizer"),
        Key("epsilon", "Adam's epsilon (torch 1e-8)", "optimizer"),
        Key(
            "bias_correction_betas",
            "'float32': the betas rounded to float32 in the epsilon-hat step size",
            "optimizer",
        ),
        Key(
            "weight_decay",
            "AdamW's decoupled weight decay (torch 0.01), applied as each form applies it",
            "optimizer",
        ),
        Key("weight_decay_dtype", "'float32': the weight decay rounded to float32", "optimizer"),
        Key(
            "frozen",
            "parameters whose gradients are computed but never applied (a framework that "
            "trains a tied combination once)",
            "optimizer",
        ),
        Key(
            "compute_dtype",
            "'float32': the cell computes at float32 precision and is held to the float32 "
            "tolerance",
            "harness",
        ),
    )
}
