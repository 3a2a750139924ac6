"""JAX backends for equiv, found through the ``equiv.backends`` entry point (see backend.py)."""

__version__ = "0.1.0"
