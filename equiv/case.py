"""Public path of ``equiv.contract.case``: case specs, declared explanations and case discovery.

The same module object, not a copy: its names, private ones included, and anything patched on it
are the real module's.
"""

import sys

from equiv.contract import case as _real

sys.modules[__name__] = _real
