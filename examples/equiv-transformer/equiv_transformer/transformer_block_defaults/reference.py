"""Reference for transformer_block_defaults: transformer_block's; the torch model's settings
(eps 1e-5, exact GELU) are its config, and the explanations' variants change them."""

from equiv_transformer.transformer_block.reference import forward_backward

__all__ = ["forward_backward"]
