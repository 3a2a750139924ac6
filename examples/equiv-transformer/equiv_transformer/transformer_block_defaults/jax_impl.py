"""transformer_block_defaults: transformer_block's code; ``settings: "defaults"`` in the case
config makes each port keep its framework's defaults."""

from equiv_transformer.transformer_block.jax_impl import build

__all__ = ["build"]
