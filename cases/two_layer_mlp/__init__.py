"""Case two_layer_mlp: see spec.py."""
