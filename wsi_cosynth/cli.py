"""The ``wsi-cosynth`` command: parses arguments, calls the API, reports.

Each subcommand lives in ``wsi_cosynth/commands/<name>.py`` with two functions:
``add_parser(subparsers)`` (registers its arguments; imports nothing heavy) and
``run(args) -> int``. Errors a user can cause are :class:`CosynthError`: printed as one line
on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import CosynthError

# Order here is the order in `wsi-cosynth --help`.
COMMANDS = ("export", "convert", "tiles", "layouts", "train", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsi-cosynth",
        description="Whole-slide nuclei datasets, real and co-synthesised (image + label + distance map).",
    )
    parser.add_argument("--version", action="version", version=f"wsi-cosynth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.commands.{name}":
                continue  # command not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 1
    try:
        return int(args.run(args) or 0)
    except CosynthError as exc:
        print(f"wsi-cosynth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wsi-cosynth {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
