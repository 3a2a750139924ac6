"""Public path of the backend adapter interface (``equiv.contract.backend``)."""

import sys

from equiv.contract import backend as _real

sys.modules[__name__] = _real
