"""Case minibatch_partial: see spec.py."""
