"""``equiv diff OLD NEW``: did a framework upgrade (or any change) change the numerics?

    equiv diff OLD NEW [--out DIR] [--json FILE]

OLD and NEW are run folders (``equiv run --out``), parity.json files, or stored baselines
(``equiv baseline``). Cells are paired by id and labelled: identical, drift (changed, within
tolerance on both sides), regression, fixed, changed explanation, still failing, not
comparable (with why), missing, skipped. Prints a summary; --out writes DIR/diff.json and
DIR/diff.html. Exit status 1 on a regression, 2 on bad input (one line), else 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from equiv.cli.commands import fail


def register(sub) -> None:
    p = sub.add_parser(
        "diff",
        help="label every cell of two runs: identical, drift, regression, fixed, ...",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="equiv diff OLD NEW [--out DIR] [--json FILE]",
    )
    p.add_argument("old", metavar="OLD", help="run folder, parity.json or baseline")
    p.add_argument("new", metavar="NEW", help="run folder, parity.json or baseline")
    p.add_argument("--out", metavar="DIR", help="write DIR/diff.json and DIR/diff.html")
    p.add_argument("--json", metavar="FILE", help="write the diff document to FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from equiv.cli.commands.run_cmd import check_writable
    from equiv.drift.labels import diff_sides
    from equiv.drift.page import diff_document, render_html, text_summary
    from equiv.drift.sides import check_compatible, load_side
    from equiv.results.document import InvalidResults, atomic_write_bytes, write_json

    try:
        old, new = load_side(args.old, "OLD"), load_side(args.new, "NEW")
        check_compatible(old, new)
    except InvalidResults as exc:
        return fail("diff", str(exc))
    folders = [Path(args.out)] if args.out else []
    if args.json:
        folders.append(Path(args.json).parent)
    for folder in folders:
        if problem := check_writable(folder):
            return fail("diff", problem)
    try:
        result = diff_sides(old, new)
        document = diff_document(result)
        html = render_html(result) if args.out else None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return fail(
            "diff", f"cannot compare {args.old} and {args.new}: malformed results ({exc!r:.200})"
        )
    print(text_summary(result))
    if args.json:
        write_json(Path(args.json), document)
    if args.out:
        out = Path(args.out)
        write_json(out / "diff.json", document)
        atomic_write_bytes(out / "diff.html", html.encode())
        print(f"Wrote {out / 'diff.json'}, {out / 'diff.html'}")
    return 1 if result.regressed else 0
