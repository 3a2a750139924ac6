"""Case dynamic_branching: see spec.py."""
