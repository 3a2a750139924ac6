"""Public path of ``equiv.backends.registry``: the installed backends (``get_backend``,
``all_backends``).

The same module object, not a copy: its names, private ones included, and anything patched on it
are the real module's.
"""

import sys

from equiv.backends import registry as _real

sys.modules[__name__] = _real
