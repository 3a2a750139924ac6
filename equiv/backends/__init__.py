"""Backend adapters, one module per framework, each exposing ``backends() -> list[Backend]``.

Built-in and third-party backends are found the same way: the ``equiv.backends`` entry-point
group (see ``equiv.registry``).
"""
