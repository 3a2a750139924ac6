"""Case parallel_blocks: see spec.py."""
