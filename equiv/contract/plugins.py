"""Entry-point groups in one order for everything that loads plugins (cases and backends).

equiv's own entries first, then the plugins', so that which of two clashing plugins keeps a name
does not depend on the order of ``sys.path``.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points


def _describe_entry_point(ep: EntryPoint) -> tuple[bool, str, str]:
    """(is equiv's own, distribution name, 'plugin ... (dist version)') for ordering and
    messages."""
    dist = getattr(ep, "dist", None)
    dist_name = dist.name if dist is not None else ""
    version = dist.version if dist is not None else ""
    own = dist_name == "equiv" or ep.value.startswith("equiv.")
    where = f" ({dist_name} {version})" if dist_name else ""
    return own, dist_name, f"plugin {ep.name!r}{where}"


def ordered_entry_points(group: str) -> list[tuple[EntryPoint, bool, str]]:
    """The entry points of ``group`` as (entry point, is equiv's own, origin for messages):
    equiv's own first, in their declared order (numpy, the baseline row, leads); then the
    plugins sorted by distribution and name, so that which of two clashing plugins keeps a
    name does not depend on the order of sys.path."""
    try:
        eps = list(entry_points(group=group))
    except Exception:  # unreadable metadata of some distribution: the built-ins still work
        eps = []
    described = sorted(
        ((ep, *_describe_entry_point(ep)) for ep in eps),
        key=lambda row: (False, "", "") if row[1] else (True, row[2], row[0].name),
    )
    return [(ep, own, origin) for ep, own, _, origin in described]
