"""Known framework differences as data (``entries``), their standard keys (``keys``) and the
page made from them (``page``, docs/known-differences.md)."""

from equiv.catalogue.entries import ENTRIES, Difference, entry
from equiv.catalogue.keys import KEYS

__all__ = ["ENTRIES", "KEYS", "Difference", "entry"]
