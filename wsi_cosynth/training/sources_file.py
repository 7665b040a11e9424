"""The sources YAML of ``wsi-cosynth train --sources FILE``: several training sources in one file.

::

    balance: sqrt                      # optional: overrides the config's train.source_balance
    holdout_images: [train_3, TCGA-A7-A13E-01Z-00-DX1]   # optional: source images kept for validation
    sources:
      - name: consep                   # optional (default: the directory's or first slide's name)
        data: consep/train             # a tile dataset directory ...
        format: consep                 # ... in this reader format
        tissue: colon
      - name: monuseg
        data: monuseg/train            # a directory of annotated images (x.tif + x.xml) ...
        format: slides                 # ... read as slides
        slide_mpp: 0.25                # their resolution, which the files do not record
        tissue_table: monuseg/organs.csv   # tissue per image (columns image, organ)
      - slides: [a.svs, b.svs]         # annotated slides (sidecars, or annotations: [...] in order)
        class_map: {tumor: epithelial} # optional: source class -> model class (or a class-map YAML path)

Relative paths are relative to the YAML file. Unknown keys are errors, as in model configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CosynthError, read_yaml_file
from ..taxonomy import load_class_map, normalise_name
from .mixture import BALANCE_RULES, SourceSpec

SOURCE_KEYS = frozenset({"name", "data", "format", "slides", "annotations", "tissue", "tissue_table", "class_map",
                         "mpp", "slide_mpp", "min_nuclei"})
TOP_KEYS = frozenset({"balance", "holdout_images", "sources"})


@dataclass(frozen=True)
class SourcesFile:
    """What a sources YAML says: the sources, and optionally the balance rule and held-out images."""

    sources: tuple[SourceSpec, ...]
    balance: str | None = None
    holdout_images: tuple[str, ...] = ()


def default_source_name(data: Path | None, slides: tuple[Path, ...]) -> str:
    """A source's name when none is given: its directory's name (``consep/train`` -> ``consep``
    for a generic last part such as train/test), or its first slide's stem."""
    if data is not None:
        parts = data.resolve().parts
        generic = {"train", "test", "val", "valid", "validation", "images", "data"}
        return parts[-2] if len(parts) >= 2 and parts[-1].lower() in generic else parts[-1]
    return slides[0].stem if slides else "source"


def _number(value: object, key: str, where: str, *, integer: bool = False) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise CosynthError(f"{where}: {key} must be a {'whole ' if integer else ''}number, got {value!r:.40}")
    if value <= 0 and not (integer and value == 0):
        raise CosynthError(f"{where}: {key} must be positive, got {value!r}")
    return value


def _paths(value: object, key: str, where: str, base: Path) -> tuple[Path, ...]:
    items = [value] if isinstance(value, str) else value
    if items is None:
        return ()
    if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
        raise CosynthError(f"{where}: {key} must be a path or a list of paths")
    return tuple(base / v for v in items)


def _class_map(value: object, where: str, base: Path) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return load_class_map(base / value)
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return {normalise_name(k): v for k, v in value.items()}
    raise CosynthError(f"{where}: class_map must be a mapping of class name -> class name, or a class-map YAML path")


def _source(entry: object, index: int, base: Path, where_file: str) -> SourceSpec:
    where = f"{where_file}: sources[{index}]"
    if not isinstance(entry, dict):
        raise CosynthError(f"{where} must be a mapping (data/format/tissue, or slides)")
    unknown = sorted(set(map(str, entry)) - SOURCE_KEYS)
    if unknown:
        raise CosynthError(f"{where}: unknown key(s) {unknown} (valid: {', '.join(sorted(SOURCE_KEYS))})")
    data = entry.get("data")
    if data is not None and not (isinstance(data, str) and data):
        raise CosynthError(f"{where}: data must be a directory path")
    slides = _paths(entry.get("slides"), "slides", where, base)
    if (data is None) == (not slides):
        raise CosynthError(f"{where}: give exactly one of data (a directory) or slides (a list of slide files)")
    for key in ("name", "format", "tissue"):
        if entry.get(key) is not None and not (isinstance(entry[key], str) and entry[key].strip()):
            raise CosynthError(f"{where}: {key} must be a non-empty string")
    data_path = base / data if data is not None else None
    table = entry.get("tissue_table")
    if table is not None and not (isinstance(table, str) and table):
        raise CosynthError(f"{where}: tissue_table must be a CSV file path")
    return SourceSpec(
        name=str(entry.get("name") or default_source_name(data_path, slides)),
        data=data_path, format=str(entry.get("format") or "consep").lower(), slides=slides,
        annotations=_paths(entry.get("annotations"), "annotations", where, base),
        tissue=entry.get("tissue"), tissue_table=base / table if table is not None else None,
        class_map=_class_map(entry.get("class_map"), where, base),
        mpp=_number(entry.get("mpp"), "mpp", where), slide_mpp=_number(entry.get("slide_mpp"), "slide_mpp", where),
        min_nuclei=int(_number(entry.get("min_nuclei", 1), "min_nuclei", where, integer=True) or 0),
    )


def read_sources_file(path: str | Path) -> SourcesFile:
    """Parse a sources YAML (module docstring); CosynthError naming the file and the problem."""
    p, doc = read_yaml_file(path, "sources file")
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), list) or not doc["sources"]:
        raise CosynthError(f"sources file {p}: expected a mapping with a non-empty list 'sources'")
    unknown = sorted(set(map(str, doc)) - TOP_KEYS)
    if unknown:
        raise CosynthError(f"sources file {p}: unknown key(s) {unknown} (valid: {', '.join(sorted(TOP_KEYS))})")
    balance = doc.get("balance")
    if balance is not None and balance not in BALANCE_RULES:
        raise CosynthError(f"sources file {p}: balance must be one of {', '.join(BALANCE_RULES)}, got {balance!r:.40}")
    held = doc.get("holdout_images") or []
    if not isinstance(held, list) or not all(isinstance(h, str) and h for h in held):
        raise CosynthError(f"sources file {p}: holdout_images must be a list of image names")
    base = p.resolve().parent
    sources = tuple(_source(e, i, base, f"sources file {p}") for i, e in enumerate(doc["sources"]))
    return SourcesFile(sources=sources, balance=balance, holdout_images=tuple(held))
