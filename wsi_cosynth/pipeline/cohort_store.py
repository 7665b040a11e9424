"""The resumable work directory of a cohort export.

``.<out>.cosynth-cohort/`` (a sibling of the output) holds ``manifest.json`` (the settings that
decide the tiles; a rerun with other settings is refused unless ``--restart``) and one folder
per slide, named by the slide's stem and a digest of what decides its tiles (the slide and
annotation files' size and modification time, its tissue, resolution and name in the cohort):

    slides/<stem>_<digest>/slide.json      what planning found: status, tiles, classes, notes
    slides/<stem>_<digest>/layouts.npz     the slide's layouts and their colour references (synthetic)
    slides/<stem>_<digest>/part_<i>.npz    the tiles of task i (a batch, or a run of real tiles)

Every file is written atomically with its SHA-256 beside it (:func:`.workdir.write_with_digest`);
a missing or damaged file is simply made again. A changed slide gets a new folder; folders of
slides no longer in the cohort are removed when the cohort is written (or kept with the failed
slides for a rerun). Tile files are self-describing (taxonomy, provenance, placement, image,
instances, classes, the prompt and the source outlines as WKB), so the datasets are written from
them alone. They keep what the dataset writers use and nothing more: a synthetic tile's distance
map and sampled semantic map are no format's, and leaving them out spares the client compressing
them for every tile.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text_atomic
from ..colour import ColourStats
from ..errors import CosynthError
from ..records import LabelledTile, Layout, Provenance, SlidePlacement
from ..taxonomy import Taxonomy
from .planning import OUTLINES_KEY
from .workdir import read_with_digest, resume_manifest, write_with_digest

MANIFEST = "manifest.json"
SLIDE_INFO = "slide.json"
LAYOUTS = "layouts.npz"


class CohortWorkDir:
    """The work directory of the cohort export to ``out`` with ``settings``."""

    def __init__(self, out: str | Path, settings: dict[str, Any], *, restart: bool = False) -> None:
        out = Path(out)
        self.path = out.with_name(f".{out.name}.cosynth-cohort")
        self.settings = settings
        manifest = self.path / MANIFEST
        if restart and self.path.exists():
            shutil.rmtree(self.path)
        if resume_manifest(manifest, "settings", settings, what="cohort export") is None:
            self.path.mkdir(parents=True, exist_ok=True)
            write_text_atomic(manifest, json.dumps({"settings": settings}, indent=2, sort_keys=True))

    def slide(self, folder: str) -> "SlideStore":
        return SlideStore(self.path / "slides" / folder)

    def prune(self, keep: set[str]) -> None:
        """Remove slide folders not named in ``keep`` (slides changed or gone from the cohort)."""
        root = self.path / "slides"
        if root.is_dir():
            for child in root.iterdir():
                if child.name not in keep:
                    shutil.rmtree(child, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def slide_folder(stem: str, identity: dict[str, Any]) -> str:
    """``<stem>_<12 hex digits>``: the digest of ``identity`` (JSON), so a changed slide gets a new folder."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{stem}_{digest}"


def file_identity(path: Path | None) -> list[Any] | None:
    """(path, size, mtime_ns) of a file, or None when there is none (missing files fail at planning)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return [os.path.abspath(path), None, None]
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


class SlideStore:
    """One slide's finished work in the cohort work directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def info(self) -> dict | None:
        data = read_with_digest(self.path / SLIDE_INFO)
        try:
            return json.loads(data) if data is not None else None
        except ValueError:
            return None

    def save_info(self, info: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_with_digest(self.path / SLIDE_INFO, json.dumps(info, sort_keys=True).encode())

    def layouts(self) -> tuple[list[Layout], dict[str, ColourStats]] | None:
        """The slide's layouts and their colour references by layout name, or None when not stored."""
        data = read_with_digest(self.path / LAYOUTS)
        return None if data is None else _load_npz(self.path / LAYOUTS, data, _layouts_from)

    def save_layouts(self, layouts: list[Layout], colours: dict[str, ColourStats]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_with_digest(self.path / LAYOUTS, _npz(_layouts_arrays(layouts, colours)))

    def _part(self, index: int) -> Path:
        return self.path / f"part_{index:06d}.npz"

    def part_done(self, index: int) -> bool:
        return read_with_digest(self._part(index)) is not None

    def save_part(self, index: int, tiles: list[LabelledTile]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_with_digest(self._part(index), _npz(_tiles_arrays(tiles)))

    def load_part(self, index: int) -> list[LabelledTile]:
        path = self._part(index)
        data = read_with_digest(path)
        if data is None:
            raise CosynthError(f"cohort work file {path} is missing or damaged; rerun the same command to redo it")
        return _load_npz(path, data, _tiles_from)


# ----------------------------------------------------------------------------------------- files
def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _load_npz(path: Path, data: bytes, parse):
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return parse(npz)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError, CosynthError) as exc:
        raise CosynthError(f"unreadable cohort work file {path}: {exc}; rerun with --restart") from None


def _placement(p: SlidePlacement | None) -> list[float] | None:
    return None if p is None else [p.x0, p.y0, p.scale]


def _placement_from(v: list[float] | None) -> SlidePlacement | None:
    return None if v is None else SlidePlacement(float(v[0]), float(v[1]), float(v[2]))


def _layouts_arrays(layouts: list[Layout], colours: dict[str, ColourStats]) -> dict[str, np.ndarray]:
    taxonomy = layouts[0].taxonomy.to_dict() if layouts else None
    meta = {"taxonomy": taxonomy, "layouts": [
        {"provenance": lay.provenance.to_dict(), "placement": _placement(lay.placement), "size": list(lay.size),
         "n": len(lay), "colour": colours[lay.provenance.name].to_dict() if lay.provenance.name in colours else None}
        for lay in layouts]}
    return {"meta": np.array(json.dumps(meta)),
            "xy": np.concatenate([lay.xy_tile for lay in layouts]) if layouts else np.zeros((0, 2)),
            "classes": np.concatenate([lay.classes for lay in layouts]) if layouts else np.zeros(0, np.int64)}


def _layouts_from(npz) -> tuple[list[Layout], dict[str, ColourStats]]:
    meta = json.loads(str(npz["meta"]))
    if not meta["layouts"]:
        return [], {}
    taxonomy = Taxonomy.from_dict(meta["taxonomy"], where="cohort layouts")
    xy, classes = npz["xy"], npz["classes"]
    layouts, colours, start = [], {}, 0
    for rec in meta["layouts"]:
        end = start + int(rec["n"])
        lay = Layout(xy_tile=xy[start:end], classes=classes[start:end], size=tuple(rec["size"]), taxonomy=taxonomy,
                     provenance=Provenance.from_dict(rec["provenance"]), placement=_placement_from(rec["placement"]))
        layouts.append(lay)
        if rec.get("colour") is not None:
            colours[lay.provenance.name] = ColourStats.from_dict(rec["colour"])
        start = end
    return layouts, colours


def _tiles_arrays(tiles: list[LabelledTile]) -> dict[str, np.ndarray]:
    import shapely

    arrays: dict[str, np.ndarray] = {}
    records = []
    for i, tile in enumerate(tiles):
        arrays[f"{i}_image"] = tile.image
        arrays[f"{i}_instances"] = tile.instances
        arrays[f"{i}_classes"] = tile.classes
        outlines = tile.extra.get(OUTLINES_KEY)
        if outlines is not None:
            wkb = [shapely.to_wkb(g) for g in outlines]
            arrays[f"{i}_outlines"] = np.frombuffer(b"".join(wkb), dtype=np.uint8)
            arrays[f"{i}_outline_ends"] = np.cumsum([len(b) for b in wkb], dtype=np.int64)
        records.append({"provenance": tile.provenance.to_dict(), "placement": _placement(tile.placement),
                        "prompt": tile.extra.get("prompt")})
    taxonomy = tiles[0].taxonomy.to_dict() if tiles else None
    arrays["meta"] = np.array(json.dumps({"taxonomy": taxonomy, "tiles": records}))
    return arrays


def _tiles_from(npz) -> list[LabelledTile]:
    import shapely

    meta = json.loads(str(npz["meta"]))
    if not meta["tiles"]:
        return []
    taxonomy = Taxonomy.from_dict(meta["taxonomy"], where="cohort tiles")
    names = set(npz.files)
    tiles = []
    for i, rec in enumerate(meta["tiles"]):
        extra: dict[str, Any] = {}
        if rec.get("prompt") is not None:
            extra["prompt"] = rec["prompt"]
        if f"{i}_outlines" in names:
            raw, ends = npz[f"{i}_outlines"].tobytes(), npz[f"{i}_outline_ends"]
            starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
            extra[OUTLINES_KEY] = np.array([shapely.from_wkb(raw[s:e]) for s, e in zip(starts, ends)], dtype=object)
        tiles.append(LabelledTile(
            image=npz[f"{i}_image"], instances=npz[f"{i}_instances"], classes=npz[f"{i}_classes"], taxonomy=taxonomy,
            provenance=Provenance.from_dict(rec["provenance"]), placement=_placement_from(rec["placement"]),
            extra=extra))
    return tiles
