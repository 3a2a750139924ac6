"""Case keras_sequential: see spec.py."""
