"""Public path of ``equiv.contract.records``: canonical states, step records and cell results.

The same module object, not a copy: its names, private ones included, and anything patched on it
are the real module's.
"""

import sys

from equiv.contract import records as _real

sys.modules[__name__] = _real
