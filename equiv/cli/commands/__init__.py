"""Sub-commands of the ``equiv`` command line, one module each with ``register`` and ``run``."""

import sys


def fail(command: str, message: str) -> int:
    """Bad input: one line on stderr, ``equiv <command>: error: ...``, and exit status 2."""
    print(f"equiv {command}: error: {message}", file=sys.stderr)
    return 2
