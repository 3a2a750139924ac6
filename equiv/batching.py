"""Public path of ``equiv.reference.batching``: which data each step trains on.

The same module object, not a copy: its names, private ones included, and anything patched on it
are the real module's.
"""

import sys

from equiv.reference import batching as _real

sys.modules[__name__] = _real
