"""The one exception type users see.

Anything a user can cause (missing or unreadable file, bad annotation, unknown class, no tissue,
incompatible checkpoint) raises :class:`CosynthError` with a message that names the file or
argument, what was expected and what was found. The CLI prints the message without a traceback
and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class CosynthError(Exception):
    """A problem with the user's input, reported without a traceback by the CLI."""


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise CosynthError if it is not an existing file."""
    p = Path(path)
    if not p.exists():
        raise CosynthError(f"{what} not found: {p}")
    if not p.is_file():
        raise CosynthError(f"{what} is not a file: {p}")
    return p


def require_dir(path: str | Path, what: str = "directory") -> Path:
    """Return ``path`` as a Path, or raise CosynthError if it is not an existing directory."""
    p = Path(path)
    if not p.exists():
        raise CosynthError(f"{what} not found: {p}")
    if not p.is_dir():
        raise CosynthError(f"{what} is not a directory: {p}")
    return p
