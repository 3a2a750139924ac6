"""One module per equiv case, named after it: ``build(state, backend)`` returns a trainer with
``run_step()`` and ``record()``. A case without a module here is a ``skip`` for JAX."""
