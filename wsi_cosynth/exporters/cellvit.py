"""CellViT-style tiles (read only), as CellViT's PanNuke/NuCLS preparation writes them.

Layout (``path`` holds the tiles, or split folders such as train/ and test/ that do)::

    images/<stem>.png     RGB
    labels/<stem>.npy     pickled dict {"inst_map": (H, W) int, "type_map": (H, W) int}
                          (load needs allow_pickle; ids need not be contiguous)
    label_map.yaml        optional, beside or above: {type id: class name}

The class of an instance is the majority non-zero ``type_map`` value over its pixels (a nucleus
with type 0 only is an error). Classes come from ``label_map.yaml`` when present (e.g. NuCLS:
1 Non-Tumor, 2 Tumor -> the built-in ``nucls`` set when the names match), else type ids are read
as PanNuke's (CellViT's PanNuke labels use 1..5 in channel order).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import CosynthError, optional_file, require_dir
from ..records import LabelledTile, Provenance
from ..taxonomy import BUILTIN, Taxonomy, get_taxonomy, normalise_name
from ._common import IMAGE_SUFFIXES, as_instance_map, list_stems, load_image, load_npy
from .consep import instances_and_types


def _roots(path: Path) -> list[Path]:
    require_dir(path, "CellViT-style dataset")
    if (path / "images").is_dir():
        return [path]
    subs = [d for d in sorted(path.iterdir()) if (d / "images").is_dir() and (d / "labels").is_dir()]
    if not subs:
        raise CosynthError(f"{path}: expected images/ + labels/ (or split folders that hold them)")
    return subs


def _pairs(path: Path) -> list[tuple[str, Path, Path]]:
    out = []
    many = len(_roots(path)) > 1 or _roots(path)[0] != path
    for root in _roots(path):
        labels = list_stems(root / "labels", (".npy",))
        for stem, img in list_stems(root / "images", IMAGE_SUFFIXES).items():
            if stem not in labels:
                raise CosynthError(f"{root / 'labels'}: no label file {stem}.npy for image {img.name}")
            out.append((f"{root.name}_{stem}" if many and not stem.startswith(root.name) else stem, img, labels[stem]))
    return out


def _taxonomy(path: Path) -> tuple[Taxonomy, dict[int, int]]:
    """Taxonomy and type id -> class id, from label_map.yaml if found."""
    import yaml

    for p in (path / "label_map.yaml", path.parent / "label_map.yaml"):
        if optional_file(p, "CellViT label map"):
            try:
                raw = yaml.safe_load(p.read_text(encoding="utf-8"))
                mapping = {int(k): v for k, v in raw.items() if int(k) > 0}
                if not mapping or not all(isinstance(v, str) and v.strip() for v in mapping.values()):
                    raise ValueError(f"class names must be non-empty strings, got {list(mapping.values())[:6]}")
            except (yaml.YAMLError, AttributeError, TypeError, ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise CosynthError(f"{p}: expected a mapping {{type id: class name}}: {exc}") from None
            names = [mapping[k] for k in sorted(mapping)]
            keys = [normalise_name(n) for n in names]
            for tax in BUILTIN.values():  # reuse a built-in set when the names are the same
                if [normalise_name(n) for n in tax.names] == keys:
                    return tax, {k: i + 1 for i, k in enumerate(sorted(mapping))}
            return Taxonomy.from_names(path.name, names), {k: i + 1 for i, k in enumerate(sorted(mapping))}
    tax = get_taxonomy("pannuke")
    return tax, {i: i for i in range(1, tax.n_classes + 1)}


def count(path: Path) -> int:
    return len(_pairs(path))


def read(path: Path) -> Iterator[LabelledTile]:
    """Yield the tiles in folder, then stem, order."""
    taxonomy, type_to_class = _taxonomy(path)
    lut = np.zeros(max(type_to_class) + 1, dtype=np.int64)
    for t, c in type_to_class.items():
        lut[t] = c
    for name, image_path, label_path in _pairs(path):
        image = load_image(image_path)
        data = load_npy(label_path, allow_pickle=True)
        if isinstance(data, np.ndarray) and data.dtype == object and data.shape == ():
            data = data.item()
        if not isinstance(data, dict) or "inst_map" not in data or "type_map" not in data:
            found = sorted(data) if isinstance(data, dict) else f"{type(data).__name__} {getattr(data, 'shape', '')}"
            raise CosynthError(f"{label_path}: expected a dict with keys 'inst_map' and 'type_map', found {found}")
        inst = as_instance_map(data["inst_map"], label_path, image.shape[:2])
        tmap = as_instance_map(data["type_map"], label_path, image.shape[:2])
        instances, types = instances_and_types(inst, {"type_map": tmap}, label_path, "raw")
        if len(types) and types.max() >= len(lut):
            raise CosynthError(f"{label_path}: type {int(types.max())} has no class in {taxonomy.key!r}")
        yield LabelledTile(
            image=image,
            instances=instances,
            classes=lut[types],
            taxonomy=taxonomy,
            provenance=Provenance(name=name, source=str(image_path)),
        )
