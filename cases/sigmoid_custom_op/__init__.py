"""Case sigmoid_custom_op: see spec.py."""
