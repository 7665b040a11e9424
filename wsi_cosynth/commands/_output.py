"""Output flags every long command shares: ``--no-progress`` and ``--quiet``."""

from __future__ import annotations

import argparse
import sys


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--no-progress (no progress bar) and --quiet (no progress bar, no summary; warnings and errors only)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar and no summary lines; warnings and errors are still printed")


def show_progress(args: argparse.Namespace) -> bool:
    """True unless --no-progress or --quiet was given."""
    return not (getattr(args, "no_progress", False) or getattr(args, "quiet", False))


def say(args: argparse.Namespace, message: str) -> None:
    """Print a summary line on stdout unless --quiet."""
    if not getattr(args, "quiet", False):
        print(message, flush=True)


def warn(message: str) -> None:
    """Print a warning line on stderr (never silenced)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
