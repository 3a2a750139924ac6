"""The ``equiv`` command line. Usage errors are one line and exit 2; a failed cell exits 1."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("list", "run", "diagnose", "selftest", "sweep", "report", "diff", "baseline")


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage before an error; a clear single line serves better."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def make_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="equiv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name in COMMANDS:
        module = importlib.import_module(f"equiv.cli.commands.{name}_cmd")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("equiv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
