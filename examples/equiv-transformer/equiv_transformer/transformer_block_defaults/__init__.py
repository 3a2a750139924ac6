"""Case transformer_block_defaults: see spec.py."""
