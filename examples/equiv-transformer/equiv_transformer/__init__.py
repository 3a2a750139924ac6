"""Example equiv case package: one pre-LN transformer block, ported from torch to Keras 3 and JAX,
and an LSTM regressor whose reference is its torch port.

Two transformer cases share one set of files: ``transformer_block`` (every port sets torch's
settings explicitly: the cells pass) and ``transformer_block_defaults`` (every port keeps its
own framework's defaults: the differences are declared, and proven, as explanations). equiv
finds them through the ``equiv.cases`` entry point in ``pyproject.toml``, which names
``cases``.
``lstm_regressor`` has no numpy reference: its spec names the torch port as its ground truth
(``reference_port``), and declares the one difference of the single-bias ports (Keras, JAX).
"""

__version__ = "0.1.0"


def cases():
    """The case specs of this package (imported lazily: listing them imports no framework)."""
    from equiv_transformer.lstm_regressor.spec import SPEC as LSTM
    from equiv_transformer.transformer_block.spec import SPEC as MATCHED
    from equiv_transformer.transformer_block_defaults.spec import SPEC as DEFAULTS

    return [MATCHED, DEFAULTS, LSTM]
