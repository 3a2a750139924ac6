"""Public path of ``equiv.quality.conformance``: the conformance kits for backend and case packages.

The same module object, not a copy: its names, private ones included, and anything patched on it
are the real module's.
"""

import sys

from equiv.quality import conformance as _real

sys.modules[__name__] = _real
