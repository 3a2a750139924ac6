"""Backend adapters, one module per framework, each exposing ``backends() -> list[Backend]``;
their registry (the ``equiv.backends`` entry-point group) and the loader of a case's code.
"""
