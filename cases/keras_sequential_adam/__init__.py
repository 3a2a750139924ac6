"""Case keras_sequential_adam: see spec.py."""
