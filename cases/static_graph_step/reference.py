"""Reference for static_graph_step: the computation is dynamic_branching's; only how the
frameworks build and replay it differs."""

from cases.dynamic_branching.reference import forward_backward

__all__ = ["forward_backward"]
