"""HoVer-Net / CoNSeP-style tiles: writer (layout 2 below) and reader.

Layouts accepted (``path`` is the dataset directory; stems pair images with labels):

1. HoVer-Net training tiles (as ``../shared/data/consep/train``)::

       images/<stem>.jpg|png     RGB
       inst/<stem>.npy           (H, W) integer instance map, 0 = background, ids need not be contiguous
       type_mat/<stem>.mat       inst_type (N, 1): row k = the k-th smallest id of the instance map
                                 (or row k = id k + 1 when N equals the largest id); optional
                                 inst_uid (N, 1) giving each row's id explicitly

2. CoNSeP release / HoVer-Net tile-mode ``.mat`` (docs/FORMATS.md 5.2, 5.3)::

       images/<stem>.png         (also Images/)
       labels/<stem>.mat         (also Labels/, mat/) with inst_map (H, W) and either
                                 inst_type (N, 1) [+ inst_uid (N, 1)], inst_type (N, 2) as [id, type],
                                 or type_map (H, W) (majority type per instance)

Classes: the merged CoNSeP set (1 other, 2 inflammatory, 3 epithelial, 4 spindle). ``types``
says how the files' type codes read: ``"merged"`` (1..4 as above), ``"original"`` (CoNSeP's
seven classes, merged as HoVer-Net trains: 3, 4 -> epithelial; 5, 6, 7 -> spindle), or ``"auto"``
(default): merged for layout 1, original for layout 2. Type 0 (unlabelled) is an error.

Writing (``Writer``, ``--to consep``) gives layout 2 as HoVer-Net's loaders read it::

    out/images/<name>.png     RGB
    out/labels/<name>.mat     inst_map (H, W) int32 (ids 1..N), type_map (H, W) int32 (each
                              instance's type code on its pixels), inst_type (N, 1) int32,
                              inst_uid (N, 1) int32, inst_centroid (N, 2) float64 (x, y)
    out/taxonomy.json         the class set and ``type_codes``

HoVer-Net's ``get_dataset('consep').load_ann(path, with_type=True)`` merges type codes 3, 4 ->
3 and 5, 6, 7 -> 4. So CoNSeP-class datasets are written in CoNSeP's ORIGINAL codes (other 1,
inflammatory 2, epithelial 3, spindle 5; ``type_codes: "consep-original"``), which that loader
and this reader both turn back into the merged classes 1..4. Other class sets keep their own
ids 1..K (``type_codes: "taxonomy"``; read back with ``taxonomy.json``); the writer warns that
HoVer-Net's ``consep`` loader would merge them, so train with a loader that reads ``type_map``
as it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import CosynthError, require_dir
from ..parallel import ordered_map, read_workers
from ..records import LabelledTile, Provenance, present_ids, relabel_contiguous
from ..taxonomy import Taxonomy, get_taxonomy, normalise_name
from ._common import (
    IMAGE_SUFFIXES,
    DatasetWriter,
    as_instance_map,
    list_stems,
    load_image,
    load_mat,
    load_npy,
    numeric_array,
    read_taxonomy_file,
    write_taxonomy_file,
)

TypeCodes = Literal["auto", "merged", "original"]
# HoVer-Net's merge of CoNSeP's 7 classes into 4 (dataset.py __CoNSeP.load_ann).
_ORIGINAL_TO_MERGED = np.array([0, 1, 2, 3, 3, 4, 4, 4], dtype=np.int64)
_LABEL_DIRS = ("labels", "Labels", "mat")


def _image_dir(root: Path) -> Path:
    for name in ("images", "Images"):
        if (root / name).is_dir():
            return root / name
    raise CosynthError(f"{root}: no images/ folder (CoNSeP layout: images/, inst/ + type_mat/ or labels/)")


def _pairs(root: Path) -> list[tuple[str, Path, Path, Path | None]]:
    """(stem, image, label-or-inst file, type_mat file or None) per tile."""
    require_dir(root, "CoNSeP-style dataset")
    images = list_stems(_image_dir(root), IMAGE_SUFFIXES)
    if not images:
        raise CosynthError(f"{_image_dir(root)}: no images found")
    out: list[tuple[str, Path, Path, Path | None]] = []
    if (root / "inst").is_dir():
        insts = list_stems(root / "inst", (".npy",))
        mats = list_stems(root / "type_mat", (".mat",))
        _no_orphans(insts, images, _image_dir(root))
        for stem, img in images.items():
            if stem not in insts:
                raise CosynthError(f"{root / 'inst'}: no instance map {stem}.npy for image {img.name}")
            if stem not in mats:
                raise CosynthError(f"{root / 'type_mat'}: no type file {stem}.mat for image {img.name}")
            out.append((stem, img, insts[stem], mats[stem]))
        return out
    label_dir = next((root / d for d in _LABEL_DIRS if (root / d).is_dir()), None)
    if label_dir is None:
        raise CosynthError(f"{root}: neither inst/ + type_mat/ nor labels/ with .mat files")
    mats = list_stems(label_dir, (".mat",))
    _no_orphans(mats, images, _image_dir(root))
    for stem, img in images.items():
        if stem not in mats:
            raise CosynthError(f"{label_dir}: no label file {stem}.mat for image {img.name}")
        out.append((stem, img, mats[stem], None))
    return out


def _no_orphans(labels: dict[str, Path], images: dict[str, Path], image_dir: Path) -> None:
    """A label whose image is missing is an error: the tile must not vanish from the dataset."""
    orphans = [p for stem, p in labels.items() if stem not in images]
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise CosynthError(f"{orphans[0]}: no image {orphans[0].stem}.png/.jpg in {image_dir}{more}")


def _check_centroids(mat: dict[str, np.ndarray], n: int, shape: tuple[int, int], path: Path) -> None:
    """``inst_centroid`` (N, 2) (x, y), when present: one finite row per type row, inside the image."""
    if "inst_centroid" not in mat:
        return
    c = numeric_array(mat["inst_centroid"], path, "inst_centroid", integer=False).astype(np.float64)
    if c.size == 0 and n == 0:
        return
    if c.ndim != 2 or c.shape[1] != 2 or len(c) != n:
        raise CosynthError(f"{path}: inst_centroid must be ({n}, 2) (x, y) rows, got shape {c.shape}")
    h, w = shape
    if c.min() < 0 or (c[:, 0] > w).any() or (c[:, 1] > h).any():
        raise CosynthError(f"{path}: inst_centroid holds points outside the {w} x {h} image (negative or too large)")


def count(path: Path) -> int:
    return len(_pairs(path))


def read(path: Path, *, types: TypeCodes = "auto", mpp: float | None = None) -> Iterator[LabelledTile]:
    """Yield the tiles of a CoNSeP-style directory in stem order (see the module docstring)."""
    if types not in ("auto", "merged", "original"):
        raise CosynthError(f"types must be 'auto', 'merged' or 'original', got {types!r}")
    taxonomy = get_taxonomy("consep")
    own_ids = _written_type_codes(path) == "taxonomy"
    if own_ids:
        taxonomy = read_taxonomy_file(path)  # a dataset this package wrote in its own class ids

    def load(pair: tuple[str, Path, Path, Path | None]) -> LabelledTile:
        stem, image_path, label_path, type_path = pair
        image = load_image(image_path)
        if type_path is not None:
            inst = as_instance_map(load_npy(label_path), label_path, image.shape[:2])
            mat = load_mat(type_path)
            codes = "merged" if types == "auto" else types
            instances, classes = instances_and_types(inst, mat, type_path, codes)
        elif own_ids:
            mat = load_mat(label_path)
            if "inst_map" not in mat:
                raise CosynthError(f"{label_path}: missing key 'inst_map' (found: {sorted(mat)})")
            instances, classes = instances_and_types(as_instance_map(mat["inst_map"], label_path), mat, label_path, "raw")
            taxonomy.check_ids(classes, where=str(label_path))
        else:
            instances, classes = read_consep_mat(label_path, types="original" if types == "auto" else types)
            if instances.shape != image.shape[:2]:
                raise CosynthError(
                    f"{label_path}: label shape {instances.shape} does not match image {image_path.name} "
                    f"shape {image.shape[:2]}"
                )
        return LabelledTile(
            image=image,
            instances=instances,
            classes=classes,
            taxonomy=taxonomy,
            provenance=Provenance(name=stem, source=str(image_path), mpp=mpp),
        )

    # Tiles are decoded a few ahead on reader threads (in stem order, errors at their own tile).
    for _, tile in ordered_map(load, _pairs(path), workers=read_workers(), name="consep-read"):
        yield tile


def read_consep_mat(path: str | Path, *, types: TypeCodes = "original") -> tuple[np.ndarray, np.ndarray]:
    """Instance map and merged CoNSeP classes from a ``.mat`` holding ``inst_map``.

    Returns
    -------
    instances : (H, W) int32, ids 1..N contiguous (ascending order of the file's ids).
    classes : (N,) int64 in the merged CoNSeP set (1 other .. 4 spindle).
    """
    p = Path(path)
    mat = load_mat(p)
    if "inst_map" not in mat:
        raise CosynthError(f"{p}: missing key 'inst_map' (found: {sorted(mat)})")
    inst = as_instance_map(mat["inst_map"], p)
    return instances_and_types(inst, mat, p, "merged" if types == "auto" else types)


def instances_and_types(
    inst: np.ndarray, mat: dict[str, np.ndarray], path: Path, codes: Literal["merged", "original", "raw"]
) -> tuple[np.ndarray, np.ndarray]:
    """Contiguous instance map and classes from an instance map and a type record.

    ``codes``: "merged" checks types are 1..4, "original" merges CoNSeP's 1..7 into 1..4, "raw"
    returns the type codes (>= 1) unchanged.
    """
    ids = present_ids(inst)
    type_by_id = _type_by_id(inst, ids, mat, path)
    raw = np.array([type_by_id[int(i)] for i in ids], dtype=np.int64)
    if len(raw):
        if raw.min() < 1:
            bad = int(ids[np.flatnonzero(raw < 1)[0]])
            raise CosynthError(f"{path}: nucleus id {bad} has type {int(raw.min())} (unlabelled); types must be >= 1")
        top = {"merged": 4, "original": 7}.get(codes)
        if top is not None and raw.max() > top:
            hint = " (CoNSeP's original 7 classes? read with types='original')" if codes == "merged" else ""
            raise CosynthError(f"{path}: type {int(raw.max())} outside 1..{top}{hint}")
    merged = _ORIGINAL_TO_MERGED[raw] if codes == "original" else raw
    new_inst, _ = relabel_contiguous(inst, present=ids)  # as_instance_map checked ids >= 0
    return new_inst, merged


def _type_by_id(inst: np.ndarray, ids: np.ndarray, mat: dict[str, np.ndarray], path: Path) -> dict[int, int]:
    if "inst_type" in mat:
        t = numeric_array(mat["inst_type"], path, "inst_type")
        _check_centroids(mat, len(t) if t.ndim == 2 and t.shape[1] == 2 else t.size, inst.shape, path)
        if t.size == 0:
            if len(ids):
                raise CosynthError(f"{path}: inst_type is empty but the instance map has {len(ids)} nuclei")
            return {}
        if t.ndim == 2 and t.shape[1] == 2:
            # The older HoVer-Net form: rows [id, type].
            row_ids, types = t[:, 0].astype(np.int64), t[:, 1].astype(np.int64)
        else:
            types = np.squeeze(t).reshape(-1).astype(np.int64)
            if "inst_uid" in mat:
                row_ids = np.squeeze(numeric_array(mat["inst_uid"], path, "inst_uid")).reshape(-1).astype(np.int64)
            elif len(types) == len(ids):
                row_ids = ids
            elif len(ids) and len(types) == int(ids.max()):
                row_ids = np.arange(1, len(types) + 1)
            else:
                raise CosynthError(
                    f"{path}: inst_type has {len(types)} rows but the instance map has {len(ids)} nuclei "
                    f"(largest id {int(ids.max()) if len(ids) else 0})"
                )
        if len(row_ids) != len(types):
            raise CosynthError(f"{path}: inst_uid has {len(row_ids)} rows but inst_type has {len(types)}")
        table = dict(zip(row_ids.tolist(), types.tolist()))
        missing = [int(i) for i in ids if int(i) not in table]
        if missing:
            raise CosynthError(f"{path}: no type row for nucleus id(s) {missing[:5]}")
        return table
    if "type_map" in mat:
        tmap = as_instance_map(mat["type_map"], path, inst.shape)
        # Majority type over each instance's pixels.
        fg = (inst > 0) & (tmap > 0)
        pairs = np.stack([inst[fg], tmap[fg]], axis=1)
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        table: dict[int, int] = {}
        best: dict[int, int] = {}
        for (i, ty), c in zip(uniq.tolist(), counts.tolist()):
            if c > best.get(i, -1):
                best[i], table[i] = c, ty
        return {int(i): table.get(int(i), 0) for i in ids}
    raise CosynthError(f"{path}: missing key 'inst_type' or 'type_map' (found: {sorted(mat)})")


# ----------------------------------------------------------------------------------------- writing
# Merged CoNSeP class (1 other, 2 inflammatory, 3 epithelial, 4 spindle) -> CoNSeP's original code
# that HoVer-Net's merge (_ORIGINAL_TO_MERGED) turns back into it.
_MERGED_TO_ORIGINAL = np.array([0, 1, 2, 3, 5], dtype=np.int32)


def _written_type_codes(path: Path) -> str | None:
    """``type_codes`` of a dataset this package wrote (its taxonomy.json), else None."""
    from ._common import TAXONOMY_FILE, load_json

    if not (path / TAXONOMY_FILE).is_file():
        return None
    record = load_json(path / TAXONOMY_FILE)
    return str(record.get("type_codes")) if isinstance(record, dict) and "type_codes" in record else None


def _is_consep(taxonomy: Taxonomy) -> bool:
    return [normalise_name(n) for n in taxonomy.names] == list(get_taxonomy("consep").names)


class Writer(DatasetWriter):
    """CoNSeP / HoVer-Net training layout (``images/``, ``labels/*.mat``; see the module docstring)."""

    fmt = "consep"

    def __init__(self, out_dir: Path, taxonomy: Taxonomy, **kw) -> None:
        super().__init__(out_dir, taxonomy, **kw)
        (self.root / "images").mkdir()
        (self.root / "labels").mkdir()
        self.original_codes = _is_consep(taxonomy)
        if not self.original_codes and taxonomy.n_classes >= 3:
            self.notes.append(
                f"consep: type codes are taxonomy {taxonomy.key!r}'s ids 1..{taxonomy.n_classes}; HoVer-Net's own "
                f"'consep' loader merges codes 3-4 and 5-7, so train with a loader that reads type_map as it is "
                f"(nr_types = {taxonomy.n_classes + 1})"
            )

    def type_codes(self, classes: np.ndarray) -> np.ndarray:
        """(N,) int32 type codes of class ids 1..K as written (see the module docstring)."""
        c = np.asarray(classes, dtype=np.int64)
        return (_MERGED_TO_ORIGINAL[c] if self.original_codes else c).astype(np.int32)

    def _add(self, tile: LabelledTile) -> None:
        from scipy import ndimage

        from .lizard import _savemat_reproducible

        name = tile.provenance.name
        self._save_image(self.root / "images" / f"{name}.png", tile.image)
        n = tile.n_nuclei
        ids = np.arange(1, n + 1, dtype=np.int32)
        codes = self.type_codes(tile.classes)
        lut = np.concatenate([[0], codes]).astype(np.int32)
        if n:
            rc = np.asarray(ndimage.center_of_mass(np.ones(tile.size), tile.instances, ids), dtype=np.float64)
            centroid = rc[:, ::-1].copy()
        else:
            centroid = np.zeros((0, 2), dtype=np.float64)
        _savemat_reproducible(
            self.root / "labels" / f"{name}.mat",
            {
                "inst_map": tile.instances.astype(np.int32),
                "type_map": lut[tile.instances],
                "inst_type": codes.reshape(-1, 1),
                "inst_uid": ids.reshape(-1, 1),
                "inst_centroid": centroid.reshape(-1, 2),
            },
        )

    def _finish(self) -> None:
        write_taxonomy_file(self.root, self.taxonomy,
                            extra={"type_codes": "consep-original" if self.original_codes else "taxonomy"})
