"""Case minibatch: see spec.py."""
