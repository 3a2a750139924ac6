"""docs/known-differences.md, generated from the catalogue (``python -m equiv.catalogue.page
docs/known-differences.md``); a test holds the page to the data, as jax2tf generates its
limitations table from its own."""

from __future__ import annotations

import sys

from equiv.catalogue.entries import ENTRIES, PHASES, Difference
from equiv.catalogue.keys import KEYS

HEADER = """# Known framework differences

Generated from `equiv/catalogue/entries.py` by `python -m equiv.catalogue.page
docs/known-differences.md`; do not edit by hand (a test compares this page with the data).

Each row is a default or convention that makes "the same" training step compute other numbers
in another framework, or in a port that copied a value across conventions. **Variant** is the
reference variant that reproduces it, as overrides of the standard keys below: a case whose
config uses those keys can declare it (`Explanation(variant=...)`), and `equiv run --diagnose`
searches these rows for the set that explains a failing cell (docs/verdicts.md, "Diagnosis").
**Frameworks** only orders that search: a torch port with Keras's epsilon is a porting mistake
it finds. **Requires**: the config keys (or parameter names) a case must have for the row to
apply. A row without a variant cannot be expressed as one; its last column says why.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _variant(item: Difference) -> str:
    if item.variant is None:
        return "—"
    return ", ".join(f"`{k}: {v}`" for k, v in item.variant.items())


def _requires(item: Difference) -> str:
    parts = []
    for key, values in item.requires.items():
        parts.append(f"`{key}`" + (" in " + ", ".join(map(str, values)) if values else ""))
    return "; ".join(parts) or "—"


def render() -> str:
    lines = [HEADER, "## Entries", ""]
    lines.append(
        "| id | what | frameworks | versions | phase | variant | requires | dtypes | "
        "sources | not expressible because |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    order = {p: i for i, p in enumerate(PHASES)}
    for item in sorted(ENTRIES, key=lambda e: (e.variant is None, order[e.phase], e.id)):
        lines.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    f"`{item.id}`",
                    item.what,
                    ", ".join(item.frameworks),
                    item.versions,
                    item.phase + (" (last resort)" if item.last_resort else ""),
                    _variant(item),
                    _requires(item),
                    ", ".join(item.dtypes),
                    "; ".join(item.sources),
                    item.not_expressible or "",
                )
            )
            + " |"
        )
    lines += ["", "## Standard keys", "", "| key | meaning | read by |", "|---|---|---|"]
    for key in KEYS.values():
        lines.append(f"| `{key.name}` | {_cell(key.meaning)} | {key.reader} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if not argv:
        sys.stdout.write(text)
        return 0
    with open(argv[0], "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
