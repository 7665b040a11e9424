"""A small seeded mutation library and an in-process CLI runner for the fuzz tests.

``run_cli(argv)`` calls ``wsi_cosynth.cli.main`` in this process and classifies the outcome:

- ``ok``: exit 0;
- ``clean``: exit 2 with exactly one line on stderr that starts with ``wsi-cosynth <command>:
  error:`` (warnings may precede it, each on one line starting with ``warning:``);
- ``crash``: any other exception (a traceback) or exit status, or a multi-line error.

Mutators take ``(data, rng)`` and return new data; every random choice comes from the
``numpy.random.Generator`` given, so a case is reproduced by its seed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wsi_cosynth.cli import main


@dataclass
class Outcome:
    """What one CLI call did."""

    rc: int
    stdout: str
    stderr: str
    error: str | None = None  # traceback text when the call raised

    @property
    def kind(self) -> str:
        if self.error is not None:
            return "crash"
        if self.rc == 0:
            return "ok"
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ": error: " in ln]
        others = [ln for ln in lines if ": error: " not in ln and ": warning: " not in ln
                  and not ln.startswith("warning:")]
        if self.rc == 2 and len(errors) == 1 and not others:
            return "clean"
        return "crash"


def run_cli(argv: Sequence[str]) -> Outcome:
    """Run ``wsi-cosynth argv`` in-process; never raises."""
    out, err = io.StringIO(), io.StringIO()
    tb = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy noise is not the CLI's output
        try:
            rc = main(list(argv))
        except SystemExit as exc:  # argparse
            rc = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # noqa: BLE001 - a traceback is exactly what the harness looks for
            rc = -1
            tb = traceback.format_exc()
    return Outcome(rc=int(rc), stdout=out.getvalue(), stderr=err.getvalue(), error=tb)


def assert_clean(outcome: Outcome, *, names: str | Path | None = None) -> None:
    """Exit 2 with one error line (naming ``names`` when given), no traceback."""
    assert outcome.error is None, outcome.error
    assert outcome.kind == "clean", (outcome.rc, outcome.stderr[-2000:])
    if names is not None:
        line = next(ln for ln in outcome.stderr.splitlines() if ": error: " in ln)
        assert str(names) in line or Path(names).name in line, line


# ----------------------------------------------------------------------------------------- bytes
def flip_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip 1-8 random bytes."""
    if not data:
        return b"\x00"
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        i = int(rng.integers(len(buf)))
        buf[i] ^= int(rng.integers(1, 256))
    return bytes(buf)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    """Cut the file at a random point (possibly 0 bytes)."""
    return data[: int(rng.integers(0, max(len(data), 1)))]


def splice_garbage(data: bytes, rng: np.random.Generator) -> bytes:
    """Insert 1-64 random bytes at a random point."""
    i = int(rng.integers(0, len(data) + 1))
    return data[:i] + rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes() + data[i:]


def not_utf8(data: bytes, rng: np.random.Generator) -> bytes:
    """Latin-1 / invalid UTF-8 bytes somewhere in a text file."""
    i = int(rng.integers(0, len(data) + 1))
    return data[:i] + b"\xff\xfe\xe9" + data[i:]


BYTE_MUTATORS: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    "flip": flip_bytes, "truncate": truncate, "splice": splice_garbage, "latin1": not_utf8,
}


# ----------------------------------------------------------------------------------------- JSON
HOSTILE_VALUES: tuple[Any, ...] = (
    None, float("nan"), float("inf"), -float("inf"), 1e300, -1e300, 1e30, -1, 0, 0.5, 2**63, -(2**63),
    "", "x", "\udcff", [], {}, [[]], [None], [1], [1, 2], True, {"a": []},
)


def json_paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a JSON value, containers included."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(json_paths(v, prefix + (k,)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:64]):  # the first entries are enough to reach every shape
            out.extend(json_paths(v, prefix + (i,)))
    return out


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    obj[head] = _set(obj[head], rest, value)
    return obj


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def mutate_json(data: Any, rng: np.random.Generator) -> Any:
    """Replace, delete or duplicate one random node of a JSON value, or nest it deeply."""
    data = json.loads(json.dumps(data))  # a copy
    paths = json_paths(data)
    path = paths[int(rng.integers(len(paths)))]
    op = int(rng.integers(6))
    if op == 0 or not path:  # replace by a hostile value
        value = HOSTILE_VALUES[int(rng.integers(len(HOSTILE_VALUES)))]
        return _set(data, path, json.loads(json.dumps(value)) if isinstance(value, (list, dict)) else value)
    parent = _get(data, path[:-1])
    if op == 1:  # delete
        del parent[path[-1]]
        return data
    if op == 2 and isinstance(parent, list):  # duplicate a list entry
        parent.insert(int(path[-1]), json.loads(json.dumps(parent[path[-1]])))
        return data
    if op == 3:  # wrap in a list (a value where an object is expected, or the reverse)
        return _set(data, path, [_get(data, path)])
    if op == 4:  # scale a number
        node = _get(data, path)
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            factor = float(rng.choice([-1.0, 0.0, 1e6, 1e300, float("nan")]))
            return _set(data, path, node * factor)
        return _set(data, path, str(node)[:20])
    value = HOSTILE_VALUES[int(rng.integers(len(HOSTILE_VALUES)))]
    return _set(data, path, json.loads(json.dumps(value)) if isinstance(value, (list, dict)) else value)


def dumps(data: Any) -> bytes:
    """JSON bytes; NaN/Infinity written bare, as QuPath and Python do."""
    return json.dumps(data).encode("utf-8")


def deep_json(depth: int) -> bytes:
    """A JSON array nested ``depth`` levels deep."""
    return b"[" * depth + b"]" * depth


# ----------------------------------------------------------------------------------------- arrays
def mutate_array(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hostile variant of an array: other dtype, shape, NaN, negatives, huge values, empty."""
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":  # strings / objects: other strings, numbers, nothing
        op = int(rng.integers(3))
        if op == 0:
            return np.arange(a.size, dtype=np.float64).reshape(a.shape)
        if op == 1:
            return np.array(["\u00e9" * 3, "", "x" * 300][: max(a.size, 1)])
        return a.reshape(-1)[:0]
    op = int(rng.integers(8))
    if op == 0:
        return a.astype(np.float64) * np.nan if a.size else np.array([np.nan])
    if op == 1:
        return -np.abs(a.astype(np.int64)) - 1
    if op == 2:
        return a.reshape(-1)
    if op == 3:
        return np.zeros((0,) + a.shape[1:], dtype=a.dtype)
    if op == 4:
        return a.astype(np.float64) + 0.5
    if op == 5:
        return np.array([str(v) for v in a.reshape(-1)[:8]], dtype=object)
    if op == 6:
        return (a.astype(np.float64) * 1e30)
    return a.T.copy() if a.ndim == 2 else a[..., :1].copy()


# ----------------------------------------------------------------------------------------- cases
@dataclass
class Tally:
    """Per-reader counts of a fuzz run."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add_time(self, reader: str, seconds: float) -> None:
        self.seconds[reader] = self.seconds.get(reader, 0.0) + seconds

    def add(self, reader: str, kind: str, note: str = "") -> None:
        row = self.counts.setdefault(reader, {"ok": 0, "clean": 0, "crash": 0, "silent": 0})
        row[kind] += 1
        if kind in ("crash", "silent") and len(self.failures) < 20:
            self.failures.append(f"{reader}: {kind}: {note[-1500:]}")

    @property
    def total(self) -> int:
        return sum(sum(r.values()) for r in self.counts.values())

    def bad(self) -> int:
        return sum(r["crash"] + r["silent"] for r in self.counts.values())

    def table(self) -> str:
        lines = ["| reader | cases | exit 0 | exit 2 (one line) | crashes | silent | ms/case |",
                 "|---|---|---|---|---|---|---|"]
        for name, r in sorted(self.counts.items()):
            ms = 1000 * self.seconds.get(name, 0.0) / max(sum(r.values()), 1)
            lines.append(f"| {name} | {sum(r.values())} | {r['ok']} | {r['clean']} | {r['crash']} | {r['silent']} | {ms:.0f} |")
        return "\n".join(lines)


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``{relative path: bytes}`` under ``root``."""
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every regular file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def no_partial_output(parent: Path) -> bool:
    """True when no temporary (``.partial``) file or directory is left in ``parent``."""
    return not any(".partial" in p.name for p in parent.iterdir()) if parent.is_dir() else True


def environ_threads() -> None:
    """One BLAS/torch thread per process: the fuzz cases are tiny."""
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(key, "1")
