"""Public path of ``equiv.reference.numerics``: the reference's simulated rounding (``EXACT``,
``Numerics``).

The same module object, not a copy: its names, private ones included, and anything patched on it
are the real module's.
"""

import sys

from equiv.reference import numerics as _real

sys.modules[__name__] = _real
