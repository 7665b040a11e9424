"""The one exception type users see.

Anything a user can cause (missing or unreadable file, bad annotation, unknown class, no tissue,
incompatible checkpoint) raises :class:`CosynthError` with a message that names the file or
argument, what was expected and what was found. The CLI prints the message without a traceback
and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class CosynthError(Exception):
    """A problem with the user's input, reported without a traceback by the CLI."""


def require_file(path: str | Path, what: str = "file") -> Path:
    """Return ``path`` as a Path, or raise CosynthError if it is not an existing file."""
    import stat

    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        if p.is_symlink():
            raise CosynthError(f"{what} {p} is a symbolic link that leads nowhere ({exc.strerror})") from None
        raise CosynthError(f"{what} not found: {p}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise CosynthError(f"{what} is not a file: {p} ({kind})")
    return p


def optional_file(path: str | Path, what: str = "file") -> Path | None:
    """None when nothing is at ``path``; the path when it is a regular file; CosynthError otherwise.

    For optional sidecars (taxonomy.json, info.csv, type_info.json...): one that exists but is a
    FIFO, a directory or a looping link must not silently fall back to a default.
    """
    p = Path(path)
    if not p.is_symlink() and not p.exists():
        return None
    return require_file(p, what)


def require_dir(path: str | Path, what: str = "directory") -> Path:
    """Return ``path`` as a Path, or raise CosynthError if it is not an existing directory."""
    p = Path(path)
    if not p.exists():
        raise CosynthError(f"{what} not found: {p}")
    if not p.is_dir():
        raise CosynthError(f"{what} is not a directory: {p}")
    return p


def read_yaml_file(path: str | Path, what: str) -> tuple[Path, Any]:
    """(path, parsed document) of a user's YAML file; CosynthError naming ``what`` and the file
    when it is missing, not YAML, or not text."""
    import yaml

    p = require_file(path, what)
    try:
        return p, yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CosynthError(f"{what} {p} is not valid YAML: {' '.join(str(exc).split())}") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise CosynthError(f"{what} {p} is not readable YAML text ({type(exc).__name__})") from None
