"""The ``wsi-cosynth`` command: parses arguments, calls the API, reports.

Each subcommand lives in ``wsi_cosynth/commands/<name>.py`` with two functions:
``add_parser(subparsers)`` (registers its arguments; imports nothing heavy) and
``run(args) -> int``. Errors a user can cause are :class:`CosynthError`: printed as one line
on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import sys
import warnings

from . import __version__
from .errors import CosynthError
from .validation import strict_geometry

# Order here is the order in `wsi-cosynth --help`.
COMMANDS = ("export", "synthesize", "detect", "convert", "tiles", "layouts", "train", "evaluate")


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
        sub.choices[name].add_argument(
            "--strict-geometry", action="store_true",
            help="make annotation objects with unusable geometry (non-finite, absurd or out-of-image coordinates, "
                 "fewer than 3 distinct points) an error instead of dropping them with a counted warning")
    return parser


# errno values that mean "this machine cannot do it now" rather than a bug.
_RESOURCE_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG, errno.EMFILE}


def _one_line_warning(prefix: str):
    """``warnings.showwarning`` replacement: the package's warnings as one line each, no source line."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        if category.__module__.startswith(__package__):
            text = " ".join(str(message).split())
            print(f"{prefix}: warning: {text}", file=sys.stderr if file is None else file)
        else:
            default(message, category, filename, lineno, file, line)

    return show


@contextlib.contextmanager
def _quiet_libraries():
    """Libraries that log damaged input (tifffile) instead of raising: their failures reach the user
    as this package's one-line errors, so their log lines are not printed as well."""
    logger = logging.getLogger("tifffile")
    before = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = before


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 1
    prefix = f"wsi-cosynth {args.command}"
    try:
        with warnings.catch_warnings(), strict_geometry(getattr(args, "strict_geometry", False)), _quiet_libraries():
            warnings.showwarning = _one_line_warning(prefix)
            return int(args.run(args) or 0)
    except CosynthError as exc:
        print(f"{prefix}: error: {' '.join(str(exc).split())}", file=sys.stderr)  # always one line
        return 2
    except OSError as exc:
        # The machine, not the input: no permission, disk full, read-only filesystem. Outputs are
        # written under temporary names, so nothing half-written is left behind.
        if exc.errno not in _RESOURCE_ERRNOS:
            raise
        where = exc.filename if exc.filename is not None else "output"
        print(f"{prefix}: error: cannot write {where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wsi-cosynth {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
