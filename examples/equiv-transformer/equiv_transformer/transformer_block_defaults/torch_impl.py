"""transformer_block_defaults: transformer_block's code; ``settings: "defaults"`` in the case
config makes each port keep its framework's defaults. ``VARIANT_KEYS``: what the port reads of
a declared explanation's variant, when it is the reference (docs/port-reference.md)."""

from equiv_transformer.transformer_block.torch_impl import VARIANT_KEYS, build

__all__ = ["VARIANT_KEYS", "build"]
