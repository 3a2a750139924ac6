"""Sub-commands of the ``equiv`` command line, one module each with ``register`` and ``run``."""
