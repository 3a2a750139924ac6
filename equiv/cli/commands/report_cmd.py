"""``equiv report``: re-render parity.html from a parity.json, or merge several into one.

    equiv report PARITY.json [--out DIR]              copy the JSON to DIR, render DIR/parity.html
    equiv report merge A.json B.json ... --out DIR    merge runs (machines, CI jobs) into one

Every input is read and checked before anything is written, and both files are moved into
place whole: a bad input is one line on stderr and exit status 2, never a partial report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from equiv.cli.commands import fail


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="render parity.html from a parity.json, or merge several runs",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="equiv report [merge] PARITY.json [PARITY.json ...] [--out DIR]",
    )
    p.add_argument("inputs", nargs="+", metavar="PARITY.json", help="results file(s)")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default: the input's folder; required for merge)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from equiv.cli.commands.run_cmd import check_writable
    from equiv.report.merge import merge_documents, settings_differ
    from equiv.report.render import render_html, write_html
    from equiv.results.document import InvalidResults, atomic_write_bytes, load_document

    inputs = list(args.inputs)
    merging = inputs[0] == "merge"
    if merging:
        inputs = inputs[1:]
        if not inputs:
            return fail("report", "merge needs at least one PARITY.json")
        if args.out is None:
            return fail("report", "merge needs --out DIR")
    elif len(inputs) > 1:
        return fail(
            "report", "give one PARITY.json, or merge several with `equiv report merge A B ...`"
        )
    try:
        documents = [(path, load_document(Path(path))) for path in inputs]
    except InvalidResults as exc:
        return fail("report", str(exc))
    out = Path(args.out) if args.out is not None else Path(inputs[0]).parent
    problem = check_writable(out)
    if problem:
        return fail("report", problem)
    target = out / "parity.json"
    try:
        if merging:
            document = merge_documents(documents)
            data = json.dumps(document, indent=1, allow_nan=False).encode()
            html = render_html(document, out_dir=out, json_dir=out)
        else:
            source = Path(inputs[0])
            document = documents[0][1]
            data = source.read_bytes()
            html = render_html(document, out_dir=out, json_dir=source.parent)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return fail(
            "report", f"cannot render {', '.join(inputs)}: malformed results ({exc!r:.200})"
        )
    same = target.exists() and not merging and os.path.samefile(target, inputs[0])
    if not same:
        atomic_write_bytes(target, data)
    write_html(out / "parity.html", html)
    if merging:
        summary = document["summary"]
        counts = ", ".join(f"{n} {s}" for s, n in summary.items() if n and s != "total")
        print(f"merged {len(documents)} files: {summary['total']} cells ({counts or 'none'}).")
        differ = settings_differ(document)
        if differ:
            print(
                f"note: the inputs ran with different {' and '.join(differ)}; "
                "their results are not comparable cell by cell",
                file=sys.stderr,
            )
    print(f"Wrote {target} and {out / 'parity.html'}")
    return 0
