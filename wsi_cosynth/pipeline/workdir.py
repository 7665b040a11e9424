"""The resumable work directory of a synthetic export.

``<out>.cosynth-work/`` (a sibling of the dataset directory) holds ``manifest.json`` (the run's
parameters and the number of batches) and one ``batch_<index>.npz`` per finished batch, each
written atomically, then its SHA-256 in ``batch_<index>.sha256``. A rerun with the same parameters
skips the finished batches, so an interrupted export resumes without duplicates and ends with the
same files; a batch file that does not match its digest (damaged on disk) is synthesised again. A
rerun with different parameters is refused (the user deletes the work directory or passes
``--restart``).
The dataset itself is written from the batch files at the end and the work directory removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np

from ..atomic import write_bytes_atomic, write_text_atomic
from ..errors import CosynthError
from ..records import LabelledTile
from .jobs import Batch

MANIFEST = "manifest.json"


def write_with_digest(path: Path, data: bytes) -> None:
    """Write ``data`` atomically, then its SHA-256 beside it (``<path>.sha256``): the file counts
    as finished only once its digest is on disk."""
    write_bytes_atomic(path, data)
    write_text_atomic(_digest_path(path), hashlib.sha256(data).hexdigest() + "\n")


def read_with_digest(path: Path) -> bytes | None:
    """The bytes of a file written by :func:`write_with_digest`, or None when it is missing, has
    no digest or does not match it (then both are removed, so the work is done again)."""
    digest = _digest_path(path)
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        ok = digest.is_file() and digest.read_text().strip() == hashlib.sha256(data).hexdigest()
    except (OSError, UnicodeDecodeError):
        ok = False
    if not ok:
        path.unlink(missing_ok=True)
        digest.unlink(missing_ok=True)
        return None
    return data


def resume_manifest(manifest: Path, key: str, expected: dict, *, what: str = "run") -> dict | None:
    """The manifest an interrupted run left at ``manifest``, or None when there is none.

    Its ``key`` entry must equal ``expected`` (the new run's settings): a run is only resumed with
    the settings it was started with, so a mismatch, or a manifest that is not JSON, is a
    CosynthError naming the settings that differ and the way out (``--restart``).
    """
    if not manifest.is_file():
        return None
    try:
        previous = json.loads(manifest.read_text())
        if not isinstance(previous, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as exc:
        raise CosynthError(f"corrupt resume manifest {manifest}: {exc}; rerun with --restart") from None
    old = previous.get(key)
    if old != expected:
        old = old if isinstance(old, dict) else {}
        changed = sorted(k for k in set(expected) | set(old) if expected.get(k) != old.get(k))
        raise CosynthError(
            f"{manifest.parent} holds an interrupted {what} with different settings ({', '.join(changed)}); "
            "rerun with the same settings to resume, or pass --restart to start over"
        )
    return previous


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name.rsplit(".", 1)[0] + ".sha256")


class WorkDir:
    """Finished batches of one run, on disk."""

    def __init__(self, out_dir: str | Path, params: dict, *, restart: bool = False) -> None:
        out = Path(out_dir)
        self.path = out.with_name(f".{out.name}.cosynth-work")
        self.params = params
        manifest = self.path / MANIFEST
        if restart and self.path.exists():
            shutil.rmtree(self.path)
        if resume_manifest(manifest, "params", params) is None:
            self.path.mkdir(parents=True, exist_ok=True)
            write_text_atomic(manifest, json.dumps({"params": params}, indent=2, sort_keys=True))

    def _file(self, index: int) -> Path:
        return self.path / f"batch_{index:06d}.npz"

    def is_done(self, batch: Batch) -> bool:
        """True when the batch file is there and matches the SHA-256 written after it.

        A damaged (or unchecked) batch file is removed, so a resumed run synthesises it again.
        """
        return read_with_digest(self._file(batch.index)) is not None

    def save(self, batch: Batch, tiles: list[LabelledTile]) -> None:
        arrays: dict[str, np.ndarray] = {}
        for i, tile in enumerate(tiles):
            arrays[f"{i}_image"] = tile.image
            arrays[f"{i}_instances"] = tile.instances
            arrays[f"{i}_classes"] = tile.classes
            arrays[f"{i}_distance"] = tile.distance if tile.distance is not None else np.zeros(tile.size, np.float32)
            arrays[f"{i}_semantic"] = tile.extra.get("semantic", tile.semantic()).astype(np.int16)
            arrays[f"{i}_prompt"] = np.array(tile.extra.get("prompt", ""))
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        write_with_digest(self._file(batch.index), buf.getvalue())

    def load(self, batch: Batch) -> list[LabelledTile]:
        path = self._file(batch.index)
        try:
            data = np.load(path)
            tiles = []
            for i, job in enumerate(batch.jobs):
                lay = job.layout
                tiles.append(LabelledTile(
                    image=data[f"{i}_image"], instances=data[f"{i}_instances"], classes=data[f"{i}_classes"],
                    taxonomy=lay.taxonomy, provenance=lay.provenance, distance=data[f"{i}_distance"],
                    placement=lay.placement,
                    extra={"semantic": data[f"{i}_semantic"], "prompt": str(data[f"{i}_prompt"])},
                ))
            return tiles
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise CosynthError(f"unreadable batch file {path}: {exc}; rerun with --restart") from None

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
