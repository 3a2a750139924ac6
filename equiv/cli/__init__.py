"""The two ways in: the ``equiv`` command (``main``, one module per subcommand in
``commands``) and the pytest plugin (``pytest_plugin``).
"""
