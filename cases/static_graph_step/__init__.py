"""Case static_graph_step: see spec.py."""
