"""Case transformer_block: see spec.py."""
