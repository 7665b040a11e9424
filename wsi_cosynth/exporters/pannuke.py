"""PanNuke (docs/FORMATS.md section 2): writer and reader.

Layout (one fold)::

    out/images.npy   (N, H, W, 3) float64, values 0..255, RGB (H = W = 256 in PanNuke itself)
    out/masks.npy    (N, H, W, 6) float64; channels 0..4 = neoplastic, inflammatory, connective,
                     dead, epithelial holding instance ids (0 = none; ids unique across channels
                     within a tile), channel 5 = 1 on background and 0 on nuclei
    out/types.npy    (N,) <U tissue names (no pickling needed to load), in PanNuke's spelling when
                     the tissue is one of its 19 (colon -> Colon, head and neck -> HeadNeck); the
                     tile's tissue type otherwise (``--tissue`` or tissue regions); "Unknown" when
                     not known
    out/tiles.json   provenance of each tile (name, source, mpp, placement), in array order
    out/taxonomy.json

Channel j holds the nuclei of class j + 1 of the writer's taxonomy, which may have at most 5
classes; with the built-in ``pannuke`` taxonomy this is PanNuke's own channel order.

Memory stays flat in N: each tile's rows are appended to the two ``.npy`` files on disk as it
arrives (a fixed-size header is rewritten with the final N at close), so only one tile is ever
held. Reading memory-maps the arrays. Reader tolerances (docs/FORMATS.md 2.2): pixels with ids in two
channels take the larger id (as ``max(-1)``), the class of an id is the channel holding most of
its pixels; void tiles (channel 5 all 0, no nuclei) and split ids are accepted.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import CosynthError, optional_file, require_dir
from ..records import LabelledTile, Provenance, relabel_contiguous
from ..taxonomy import Taxonomy, get_taxonomy
from ..validation import placement_from, provenance_from
from ._common import DatasetWriter, load_json, load_npy, read_taxonomy_file, write_taxonomy_file

N_CLASS_CHANNELS = 5
_HEADER_BYTES = 128  # fixed .npy v1.0 header size, so N can be filled in at close


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy v1.0 header for a C-ordered little-endian float64 array, padded to _HEADER_BYTES."""
    text = "{'descr': '<f8', 'fortran_order': False, 'shape': %s, }" % (tuple(int(s) for s in shape),)
    body_len = _HEADER_BYTES - 10
    text = text.ljust(body_len - 1) + "\n"
    if len(text) != body_len:
        raise CosynthError(f"PanNuke array shape {shape} is too large for the header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", body_len) + text.encode("latin1")


class Writer(DatasetWriter):
    fmt = "pannuke"

    def __init__(self, out_dir: Path, taxonomy: Taxonomy, **kw: Any) -> None:
        if taxonomy.n_classes > N_CLASS_CHANNELS:
            raise CosynthError(
                f"PanNuke has {N_CLASS_CHANNELS} class channels but taxonomy {taxonomy.key!r} has "
                f"{taxonomy.n_classes} classes; map to a smaller set with --taxonomy/--class-map"
            )
        super().__init__(out_dir, taxonomy, **kw)
        self._fh: dict[str, BinaryIO] = {}
        for key in ("images", "masks"):
            fh = open(self.root / f"{key}.npy", "wb")
            fh.write(b"\0" * _HEADER_BYTES)
            self._fh[key] = fh
        self.size: tuple[int, int] | None = None
        self.types: list[str] = []
        self.records: list[dict] = []

    def _add(self, tile: LabelledTile) -> None:
        if self.size is None:
            self.size = tile.size
        elif tile.size != self.size:
            raise CosynthError(
                f"tile {tile.provenance.name!r} is {tile.size} but PanNuke arrays hold one size, {self.size}"
            )
        h, w = tile.size
        self._fh["images"].write(tile.image.astype("<f8").tobytes())
        masks = np.zeros((h, w, N_CLASS_CHANNELS + 1), dtype="<f8")
        cls_map = tile.semantic()
        for j in range(self.taxonomy.n_classes):
            sel = cls_map == j + 1
            masks[..., j][sel] = tile.instances[sel]
        masks[..., N_CLASS_CHANNELS] = tile.instances == 0
        self._fh["masks"].write(masks.tobytes())
        self.types.append(pannuke_tissue(tile.provenance.tissue))
        rec: dict[str, Any] = {"provenance": tile.provenance.to_dict()}
        if tile.placement is not None:
            rec["placement"] = {"x0": tile.placement.x0, "y0": tile.placement.y0, "scale": tile.placement.scale}
        self.records.append(rec)

    def _release(self) -> None:
        for fh in self._fh.values():
            fh.close()

    def _finish(self) -> None:
        n = len(self.types)
        h, w = self.size or (256, 256)
        for key, channels in (("images", 3), ("masks", N_CLASS_CHANNELS + 1)):
            fh = self._fh[key]
            fh.seek(0)
            fh.write(_npy_header((n, h, w, channels)))
            fh.close()
        np.save(self.root / "types.npy", np.array(self.types, dtype=np.str_ if n else "<U7"))
        (self.root / "tiles.json").write_text(json.dumps(self.records))
        write_taxonomy_file(self.root, self.taxonomy)


def _arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    require_dir(path, "PanNuke dataset")
    images = load_npy(path / "images.npy", mmap=True)
    masks = load_npy(path / "masks.npy", mmap=True)
    types = load_npy(path / "types.npy") if optional_file(path / "types.npy", "PanNuke types") else None
    if images.ndim != 4 or images.shape[3] != 3:
        raise CosynthError(f"{path / 'images.npy'}: expected (N, H, W, 3), got {images.shape}")
    if masks.ndim != 4 or masks.shape[3] < N_CLASS_CHANNELS or masks.shape[:3] != images.shape[:3]:
        raise CosynthError(
            f"{path / 'masks.npy'}: expected (N, H, W, 6) matching images {images.shape[:3]}, got {masks.shape}"
        )
    if types is not None and len(types) != len(images):
        raise CosynthError(f"{path / 'types.npy'}: {len(types)} entries for {len(images)} images")
    return images, masks, types


def count(path: Path) -> int:
    require_dir(path, "PanNuke dataset")
    p = path / "images.npy"
    arr = load_npy(p, mmap=True)
    return int(arr.shape[0]) if arr.ndim else 0


def masks_to_instances(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PanNuke (H, W, >=5) mask -> instance map (ids 1..N) and classes 1..5 (channel + 1)."""
    ch = np.asarray(masks[..., :N_CLASS_CHANNELS])
    if not np.all(np.isfinite(ch)) or (ch < 0).any() or not np.all(ch == np.round(ch)):
        raise CosynthError("PanNuke mask channels 0..4 must hold non-negative integer ids")
    ids = ch.astype(np.int64)
    inst = ids.max(axis=-1)
    fg = ids > 0
    # Class of an id: the channel holding most of its pixels.
    id_px, chan_px = ids[fg], np.nonzero(fg)[-1]
    table: dict[int, int] = {}
    if id_px.size:
        pairs, counts = np.unique(np.stack([id_px, chan_px], 1), axis=0, return_counts=True)
        best: dict[int, int] = {}
        for (i, c), k in zip(pairs.tolist(), counts.tolist()):
            if k > best.get(i, -1):
                best[i], table[i] = k, c + 1
    return relabel_contiguous(inst, table)


def read(path: Path) -> Iterator[LabelledTile]:
    """Yield the tiles of a PanNuke fold directory (images.npy, masks.npy, types.npy) in order."""
    images, masks, types = _arrays(path)
    taxonomy = read_taxonomy_file(path) or get_taxonomy("pannuke")
    index = path / "tiles.json"
    records: list[dict] = load_json(index) if optional_file(index, "PanNuke tile index") else []
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise CosynthError(f"{index}: expected a list of tile records (objects)")
    for i in range(len(images)):
        img = np.asarray(images[i])
        if img.dtype.kind == "f" and (not np.all(np.isfinite(img)) or img.min() < 0 or img.max() > 255):
            raise CosynthError(f"{path / 'images.npy'}: image {i} has values outside 0..255")
        try:
            inst, classes = masks_to_instances(masks[i])
        except CosynthError as exc:
            raise CosynthError(f"{path / 'masks.npy'}: tile {i}: {exc}") from None
        rec = records[i] if i < len(records) else {}
        tissue = str(types[i]) if types is not None else None
        prov = provenance_from(rec["provenance"], f"{index}: tile {i}") if "provenance" in rec else Provenance(
            name=f"{path.name}_{i}", source=str(path), mpp=0.25, tissue=tissue
        )
        placement = placement_from(rec.get("placement") or None, f"{index}: tile {i}")
        yield LabelledTile(
            image=img.astype(np.uint8),
            instances=inst,
            classes=taxonomy_classes(taxonomy, classes, path, i),
            taxonomy=taxonomy,
            provenance=prov,
            placement=placement,
        )


def taxonomy_classes(taxonomy: Taxonomy, classes: np.ndarray, path: Path, i: int) -> np.ndarray:
    if len(classes) and classes.max() > taxonomy.n_classes:
        raise CosynthError(
            f"{path / 'masks.npy'}: tile {i} has nuclei in channel {int(classes.max()) - 1} but taxonomy "
            f"{taxonomy.key!r} has {taxonomy.n_classes} classes"
        )
    return classes


# PanNuke's tissue names (types.npy), as CellViT's tissue-balanced sampling reads them.
PANNUKE_TISSUES: tuple[str, ...] = (
    "Adrenal_gland", "Bile-duct", "Bladder", "Breast", "Cervix", "Colon", "Esophagus", "HeadNeck", "Kidney",
    "Liver", "Lung", "Ovarian", "Pancreatic", "Prostate", "Skin", "Stomach", "Testis", "Thyroid", "Uterus",
)
_TISSUE_ALIASES = {"adrenal": "Adrenal_gland", "bile": "Bile-duct", "colorectal": "Colon", "colon-rectum": "Colon",
                   "rectum": "Colon", "head-and-neck": "HeadNeck", "head-neck": "HeadNeck", "ovary": "Ovarian",
                   "pancreas": "Pancreatic", "testes": "Testis", "uterine": "Uterus", "oesophagus": "Esophagus"}


def pannuke_tissue(tissue: str | None) -> str:
    """PanNuke's spelling of a tissue type ("colon" -> "Colon"); others unchanged; None -> "Unknown"."""
    if not tissue:
        return "Unknown"
    key = str(tissue).strip().lower().replace("_", "-").replace(" ", "-")
    for name in PANNUKE_TISSUES:
        if key == name.lower().replace("_", "-"):
            return name
    return _TISSUE_ALIASES.get(key, str(tissue))
