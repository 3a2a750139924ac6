"""equiv: a cross-framework equivalence test harness.

Importing this package imports no deep-learning framework: backends import theirs lazily.
"""

__version__ = "0.1.0"
