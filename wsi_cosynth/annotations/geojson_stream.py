"""Stream the Features of a GeoJSON file one at a time, with a bounded parse peak.

``iter_items(path)`` yields the top-level items of a FeatureCollection's ``features`` array
(or of a top-level array; a single Feature or bare Geometry is yielded whole) without holding
the parsed file: the text is read in blocks and each item is decoded on its own with the
standard library's decoder, which accepts QuPath's bare ``NaN`` / ``Infinity`` in measurements
(the C streaming parsers on PyPI reject them). Memory: one block plus the item being decoded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import CosynthError

BLOCK_CHARS = 1 << 18
_WS = " \t\n\r"
_DECODER = json.JSONDecoder()


class _Text:
    """A text file read in blocks, with a cursor; consumed text is dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._f = open(path, encoding="utf-8", errors="strict")
        except OSError as exc:
            raise CosynthError(f"{path} cannot be read: {exc.strerror or exc}") from None
        self.buf = ""
        self.pos = 0
        self.eof = False

    def close(self) -> None:
        self._f.close()

    def more(self, at_least: int = BLOCK_CHARS) -> bool:
        """Append at least one block (drops consumed text first); False at end of file."""
        if self.eof:
            return False
        self.buf, self.pos = self.buf[self.pos:], 0
        try:
            chunk = self._f.read(max(at_least, BLOCK_CHARS))
        except UnicodeDecodeError as exc:
            raise CosynthError(f"{self.path} is not valid JSON: UnicodeDecodeError: {exc.reason}") from None
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def peek(self) -> str:
        """The next non-space character ('' at end of file), cursor left on it."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def expect(self, char: str) -> None:
        got = self.peek()
        if got != char:
            raise CosynthError(f"{self.path} is not valid JSON: expected {char!r}, found {got or 'end of file'!r}")
        self.pos += 1

    def value(self) -> Any:
        """Decode the JSON value at the cursor, reading more text until it is complete."""
        self.peek()
        need = BLOCK_CHARS
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self.more(need):
                    need *= 2  # a very large item: grow geometrically, not one block at a time
                    continue
                raise CosynthError(f"{self.path} is not valid JSON: JSONDecodeError: {exc.msg}") from None
            except RecursionError:
                raise CosynthError(f"{self.path} is not valid JSON: nested too deeply") from None
            # A number or literal may continue past the buffer's end: decode it again with more text.
            if end >= len(self.buf) and not self.eof and not isinstance(value, (dict, list, str)):
                if self.more(need):
                    continue
            self.pos = end
            return value


def iter_items(path: str | Path) -> Iterator[tuple[Any, bool]]:
    """Yield ``(item, False)`` for each item of ``features`` (FeatureCollection) or of a top-level
    array, one at a time; a top-level object that is not a FeatureCollection (a Feature, a
    Geometry) is yielded once as ``(object, True)``. Other keys of a FeatureCollection are skipped.

    Raises
    ------
    CosynthError
        Not JSON, truncated or malformed text, a ``features`` value that is not an array.
    """
    text = _Text(Path(path))
    try:
        first = text.peek()
        if first == "[":
            text.pos += 1
            yield from ((item, False) for item in _array_items(text))
        elif first == "{":
            yield from _object(text)
        else:
            raise CosynthError(f"{path} is not valid JSON: expected an object or array, found {first or 'nothing'!r}")
        if text.peek() != "":
            raise CosynthError(f"{path} is not valid JSON: text after the end of the document")
    finally:
        text.close()


def _array_items(text: _Text) -> Iterator[Any]:
    """Items of an array whose '[' was consumed; consumes the closing ']'."""
    if text.peek() == "]":
        text.pos += 1
        return
    while True:
        yield text.value()
        nxt = text.peek()
        text.pos += 1
        if nxt == "]":
            return
        if nxt != ",":
            raise CosynthError(f"{text.path} is not valid JSON: expected ',' or ']' in an array, "
                               f"found {nxt or 'end of file'!r}")


def _object(text: _Text) -> Iterator[Any]:
    """A top-level object: stream its ``features`` if it is a FeatureCollection, else yield it whole."""
    text.expect("{")
    members: dict[str, Any] = {}
    streamed = False
    if text.peek() == "}":
        text.pos += 1
    else:
        while True:
            key = text.value()
            if not isinstance(key, str):
                raise CosynthError(f"{text.path} is not valid JSON: object key is not a string")
            text.expect(":")
            if key == "features" and text.peek() == "[" and members.get("type", "FeatureCollection") == "FeatureCollection":
                text.pos += 1
                yield from ((item, False) for item in _array_items(text))
                streamed = True
            else:
                members[key] = text.value()
            nxt = text.peek()
            text.pos += 1
            if nxt == "}":
                break
            if nxt != ",":
                raise CosynthError(f"{text.path} is not valid JSON: expected ',' or '}}' in an object, "
                                   f"found {nxt or 'end of file'!r}")
    if streamed:
        return
    if members.get("type") == "FeatureCollection":
        features = members.get("features") or []
        if not isinstance(features, list):
            raise CosynthError(f"{text.path}: feature list holds a {type(features).__name__}, not Feature objects")
        yield from ((item, False) for item in features)
    else:
        yield members, True
