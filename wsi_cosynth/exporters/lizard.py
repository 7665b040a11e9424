"""Lizard (docs/FORMATS.md section 1): writer and reader.

Layout (as the official release; stems contain no '-')::

    out/images/<name>.png     RGB
    out/labels/<name>.mat     MATLAB v5: inst_map (H, W) int32 (0 = background, ids 1..N),
                              id (N, 1) int32, class (N, 1) int32, bbox (N, 4) int32 as
                              (y1, y2, x1, x2) with y2/x2 exclusive, centroid (N, 2) float64 as (x, y)
                              in pixel-index coordinates (pixel (r, c) at (c, r))
    out/info.csv              Filename,Source,Split (Source: tile source; Split: 1)
    out/taxonomy.json         class names/colours of the ``class`` codes

``class`` codes are ids in the writer's taxonomy; with the built-in ``lizard`` taxonomy they are
Lizard's own (1 neutrophil .. 6 connective). Reading matches rows by id VALUE, as the official
``read_label.py`` does, and accepts any numeric dtype; without ``taxonomy.json`` the codes are
read as Lizard's classes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CosynthError, optional_file, require_dir
from ..geometry import instance_bboxes
from ..records import LabelledTile, Provenance, relabel_contiguous
from ..taxonomy import Taxonomy, get_taxonomy
from ._common import (
    IMAGE_SUFFIXES,
    DatasetWriter,
    as_instance_map,
    classes_in,
    list_stems,
    load_image,
    load_mat,
    numeric_array,
    read_taxonomy_file,
    write_taxonomy_file,
)


class Writer(DatasetWriter):
    fmt = "lizard"

    def __init__(self, out_dir: Path, taxonomy: Taxonomy, **kw: Any) -> None:
        super().__init__(out_dir, taxonomy, **kw)
        (self.root / "images").mkdir()
        (self.root / "labels").mkdir()
        self.rows: list[tuple[str, str, int]] = []

    def _add(self, tile: LabelledTile) -> None:
        from scipy import ndimage

        name = tile.provenance.name
        if "-" in name:
            raise CosynthError(f"tile name {name!r}: Lizard/CoNIC stems must not contain '-'")
        self._save_image(self.root / "images" / f"{name}.png", tile.image)
        n = tile.n_nuclei
        ids = np.arange(1, n + 1, dtype=np.int32)
        if n:
            rc = np.asarray(ndimage.center_of_mass(np.ones(tile.size), tile.instances, ids), dtype=np.float64)
            centroid = rc[:, ::-1].copy()
        else:
            centroid = np.zeros((0, 2), dtype=np.float64)
        bbox = instance_bboxes(tile.instances, n).astype(np.int32)  # (r0, r1, c0, c1) == (y1, y2, x1, x2)
        _savemat_reproducible(
            self.root / "labels" / f"{name}.mat",
            {
                "inst_map": tile.instances.astype(np.int32),
                "id": ids.reshape(-1, 1),
                "class": tile.classes.astype(np.int32).reshape(-1, 1),
                "bbox": bbox.reshape(-1, 4),
                "centroid": centroid.reshape(-1, 2),
            },
        )
        self.rows.append((name, tile.provenance.source or "None", 1))

    def _finish(self) -> None:
        with open(self.root / "info.csv", "w", newline="") as fh:
            out = csv.writer(fh, lineterminator="\n")
            out.writerow(["Filename", "Source", "Split"])
            out.writerows(self.rows)
        write_taxonomy_file(self.root, self.taxonomy)


_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by wsi-cosynth".ljust(116, b" ")


def _savemat_reproducible(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """savemat (v5, compressed) with a fixed header text.

    scipy writes the creation time into the 116-byte header text, so the same labels would give
    different bytes on every run; a fixed text keeps reruns byte-identical (resume, same seed).
    """
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, arrays, do_compression=True)
    data = buf.getvalue()
    path.write_bytes(_MAT_HEADER + data[116:])


def _pairs(root: Path) -> list[tuple[str, Path, Path]]:
    require_dir(root, "Lizard dataset")
    img_dir = next((root / d for d in ("images", "Images") if (root / d).is_dir()), None)
    lab_dir = next((root / d for d in ("labels", "Labels") if (root / d).is_dir()), None)
    if img_dir is None or lab_dir is None:
        raise CosynthError(f"{root}: a Lizard dataset needs images/ and labels/ folders")
    images = list_stems(img_dir, IMAGE_SUFFIXES)
    labels = list_stems(lab_dir, (".mat",))
    out = []
    for stem, img in images.items():
        if stem not in labels:
            raise CosynthError(f"{lab_dir}: no label file {stem}.mat for image {img.name}")
        out.append((stem, img, labels[stem]))
    return out


def count(path: Path) -> int:
    return len(_pairs(path))


def read_lizard_label(path: str | Path, shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Instance map (ids 1..N, ascending order of the file's ids) and class codes of one label file.

    Rows of ``class`` are matched to instances by the value in ``id`` (official read_label.py).
    """
    p = Path(path)
    mat = load_mat(p)
    for key in ("inst_map", "id", "class"):
        if key not in mat:
            raise CosynthError(f"{p}: missing key {key!r} (found: {sorted(mat)})")
    inst = as_instance_map(mat["inst_map"], p, shape)
    row_ids = np.squeeze(numeric_array(mat["id"], p, "id")).reshape(-1).astype(np.int64)
    row_cls = np.squeeze(numeric_array(mat["class"], p, "class")).reshape(-1).astype(np.int64)
    if len(row_ids) != len(row_cls):
        raise CosynthError(f"{p}: 'id' has {len(row_ids)} rows but 'class' has {len(row_cls)}")
    table = dict(zip(row_ids.tolist(), row_cls.tolist()))
    present = np.unique(inst)
    present = present[present > 0]
    missing = [int(v) for v in present if int(v) not in table]
    if missing:
        raise CosynthError(f"{p}: nucleus id(s) {missing[:5]} in inst_map have no row in 'id'")
    new, classes = relabel_contiguous(inst, table)
    return new, classes


def read(path: Path) -> Iterator[LabelledTile]:
    """Yield the tiles of a Lizard-layout directory in stem order."""
    taxonomy = read_taxonomy_file(path) or get_taxonomy("lizard")
    sources: dict[str, str] = {}
    info = path / "info.csv"
    if optional_file(info, "Lizard info file"):
        try:
            with open(info, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if not reader.fieldnames or "Filename" not in reader.fieldnames:
                    raise CosynthError(f"{info}: no 'Filename' column (header: {reader.fieldnames})")
                for row in reader:
                    if None in row or None in row.values():  # more or fewer fields than the header
                        raise CosynthError(f"{info}: line {reader.line_num} does not have the header's "
                                           f"{len(reader.fieldnames)} fields")
                    if row["Filename"]:
                        sources[row["Filename"]] = row.get("Source") or ""
        except UnicodeDecodeError as exc:
            raise CosynthError(f"{info} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        except csv.Error as exc:
            raise CosynthError(f"{info} is not a readable CSV file: {exc}") from None
    for stem, image_path, label_path in _pairs(path):
        image = load_image(image_path)
        inst, classes = read_lizard_label(label_path, image.shape[:2])
        src = sources.get(stem)
        yield LabelledTile(
            image=image,
            instances=inst,
            classes=classes_in(taxonomy, classes, label_path),
            taxonomy=taxonomy,
            provenance=Provenance(name=stem, source=src if src and src != "None" else str(image_path)),
        )
