"""HoVer-Net JSON output (read only; docs/FORMATS.md 5.1).

Layout: ``path`` is HoVer-Net's tile-mode output folder with ``json/<stem>.json`` and the input
images in ``images/`` (or beside the JSON files); ``type_info.json`` (HoVer-Net's
``{"id": [name, [r, g, b]]}``) beside or above selects the class names, otherwise types are read
as PanNuke's (the type table HoVer-Net master ships). Each file is
``{"mag": ..., "nuc": {"<id>": {"bbox", "centroid", "contour", "type_prob", "type"}}}`` with
``contour`` the (x, y) pixel indices of boundary pixels (cv2, not closed). A nucleus is filled
as cv2 fills its contour: pixels inside the polygon through the pixel centres plus the pixels on
its outline. Nuclei are painted in id order; type 0 or null (unlabelled) is an error. A contour
point that is not a finite pixel index inside the image drops its nucleus with a counted warning
(an error under ``--strict-geometry``; :mod:`wsi_cosynth.validation`); one- and two-point contours
are HoVer-Net's outlines of one- and two-pixel nuclei and are kept.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import CosynthError, optional_file, require_dir
from ..records import LabelledTile, Provenance, relabel_contiguous
from ..taxonomy import Taxonomy, get_taxonomy
from ..validation import report_dropped, ring_problem
from ._common import IMAGE_SUFFIXES, list_stems, load_image, load_json

# HoVer-Net's abbreviated PanNuke names (type_info.json) -> our class names.
_ABBREV = {"neopla": "neoplastic", "inflam": "inflammatory", "connec": "connective", "necros": "dead",
           "no-neo": "epithelial", "nolabe": "unlabelled"}


def _pairs(path: Path) -> list[tuple[str, Path, Path]]:
    require_dir(path, "HoVer-Net output folder")
    jdir = path / "json" if (path / "json").is_dir() else path
    jsons = list_stems(jdir, (".json",))
    jsons.pop("type_info", None)
    images = {**list_stems(path, IMAGE_SUFFIXES), **list_stems(path / "images", IMAGE_SUFFIXES)}
    out = []
    for stem, jp in jsons.items():
        if stem not in images:
            raise CosynthError(f"{jp}: no image {stem}.png/.jpg in {path} or {path / 'images'}")
        out.append((stem, images[stem], jp))
    if not out:
        raise CosynthError(f"{path}: no HoVer-Net JSON files (json/<stem>.json)")
    return out


def _taxonomy(path: Path) -> Taxonomy:
    for p in (path / "type_info.json", path.parent / "type_info.json"):
        if optional_file(p, "HoVer-Net type table"):
            info = load_json(p)
            try:
                items = sorted((int(k), v) for k, v in info.items() if int(k) > 0)
            except (AttributeError, TypeError, ValueError):
                raise CosynthError(f"{p}: expected {{\"id\": [name, [r, g, b]]}} with integer ids") from None
            for k, v in items:
                if not (isinstance(v, list) and v and isinstance(v[0], str) and v[0].strip()):
                    raise CosynthError(f"{p}: type {k} must be [name, [r, g, b]], got {json.dumps(v)[:60]}")
            if [k for k, _ in items] != list(range(1, len(items) + 1)):
                raise CosynthError(f"{p}: type ids must be 1..K without gaps, got {[k for k, _ in items]}")
            items = [(k, v[0]) for k, v in items]
            names = [_ABBREV.get(str(n), str(n)) for _, n in items]
            if names == list(get_taxonomy("pannuke").names):
                return get_taxonomy("pannuke")
            return Taxonomy.from_names(p.parent.name or "hovernet", names)
    return get_taxonomy("pannuke")


def count(path: Path) -> int:
    return len(_pairs(path))


def nuclei_to_instances(nuc: dict, shape: tuple[int, int], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """HoVer-Net ``nuc`` dict -> (H, W) instance map with ids 1..N and their type codes."""
    from skimage.draw import line, polygon

    inst = np.zeros(shape, dtype=np.int64)
    types = [0]
    try:
        items = sorted(nuc.items(), key=lambda kv: int(kv[0]))
    except (AttributeError, ValueError):
        raise CosynthError(f"{path}: 'nuc' must map integer ids to nuclei") from None
    reasons: Counter = Counter()
    h, w = shape
    for key, rec in items:
        if not isinstance(rec, dict) or "contour" not in rec:
            raise CosynthError(f"{path}: nucleus {key} lacks a valid 'contour'")
        t = rec.get("type")
        contour = rec["contour"]
        if not isinstance(contour, list) or not contour:
            raise CosynthError(f"{path}: nucleus {key} has an empty or malformed 'contour'")
        # Contour points are pixel indices, so they lie in [0, W - 1] x [0, H - 1].
        problem = ring_problem([_pair(v) for v in contour], bounds_xy=(0, 0, w - 1, h - 1), min_points=1)
        if problem is not None:
            reasons[problem] += 1
            continue
        xy = np.asarray(contour, dtype=np.float64).reshape(-1, 2)
        if t is not None and (isinstance(t, bool) or not (isinstance(t, int) or (isinstance(t, float) and t.is_integer()))):
            raise CosynthError(f"{path}: nucleus {key} has type {t!r:.40}, not an integer")
        t = None if t is None else int(t)
        if t is None or t < 1:
            raise CosynthError(f"{path}: nucleus {key} has type {t!r} (unlabelled); types must be >= 1")
        if t > 1_000_000:
            raise CosynthError(f"{path}: nucleus {key} has type {t}, not a class id")
        rr, cc = polygon(xy[:, 1], xy[:, 0], shape=shape)
        ij = np.round(xy).astype(np.int64)
        seg = [line(a[1], a[0], b[1], b[0]) for a, b in zip(ij, np.roll(ij, -1, axis=0))]
        pr = np.concatenate([s[0] for s in seg])
        pc = np.concatenate([s[1] for s in seg])
        keep = (pr >= 0) & (pr < shape[0]) & (pc >= 0) & (pc < shape[1])
        value = len(types)
        inst[rr, cc] = value
        inst[pr[keep], pc[keep]] = value
        types.append(int(t))
    report_dropped(path, reasons)
    return relabel_contiguous(inst, np.asarray(types))


def _pair(v: object) -> object:
    """A contour point as (x, y) when it is a pair of plain numbers, else a marker ring_problem rejects."""
    if isinstance(v, list) and len(v) == 2 and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in v):
        return v
    return [float("nan"), float("nan")]


def read(path: Path) -> Iterator[LabelledTile]:
    taxonomy = _taxonomy(path)
    for stem, image_path, json_path in _pairs(path):
        data = load_json(json_path)
        if not isinstance(data, dict) or "nuc" not in data:
            raise CosynthError(f"{json_path}: missing key 'nuc' (HoVer-Net output is {{\"mag\", \"nuc\"}})")
        image = load_image(image_path)
        inst, types = nuclei_to_instances(data["nuc"] or {}, image.shape[:2], json_path)
        taxonomy.check_ids(types, where=str(json_path))
        yield LabelledTile(image=image, instances=inst, classes=types, taxonomy=taxonomy,
                           provenance=Provenance(name=stem, source=str(image_path)))
