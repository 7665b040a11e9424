"""Nuclei class sets and mapping between them by NAME.

A :class:`Taxonomy` is an ordered list of class names with display colours; class id k (1..K)
is ``names[k-1]``; 0 is background. Two datasets are joined by class name, never by integer:
:func:`class_mapping` builds an id lookup table from one taxonomy to another, using in order
(1) the user's YAML map, (2) identical names, (3) the built-in aliases below. A class with no
mapping raises :class:`CosynthError` naming it; nothing is ever silently mapped to 0.

User YAML map: a flat ``{source_name: target_name}`` dictionary, e.g.::

    lymphocyte: inflammatory
    tumor: epithelial
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import CosynthError, read_yaml_file

RGB = tuple[int, int, int]


def normalise_name(name: str) -> str:
    """Canonical class-name key: lower case, trimmed, spaces and '_' as '-'."""
    return str(name).strip().lower().replace("_", "-").replace(" ", "-")


@dataclass(frozen=True)
class Taxonomy:
    """An ordered set of nuclei classes; id k in 1..K is ``names[k - 1]``, 0 is background."""

    key: str
    names: tuple[str, ...]
    colors: tuple[RGB, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise CosynthError(f"taxonomy {self.key!r}: {len(self.names)} names but {len(self.colors)} colours")
        if not self.names:
            raise CosynthError(f"taxonomy {self.key!r} has no classes")
        if not all(isinstance(n, str) and n.strip() for n in self.names):
            raise CosynthError(f"taxonomy {self.key!r}: class names must be non-empty strings, got {list(self.names)[:8]}")
        keys = [normalise_name(n) for n in self.names]
        if len(set(keys)) != len(keys):
            raise CosynthError(f"taxonomy {self.key!r} has duplicate class names: {list(self.names)}")

    @property
    def n_classes(self) -> int:
        """K, the number of nucleus classes (background excluded)."""
        return len(self.names)

    def id_of(self, name: str, *, where: str = "") -> int:
        """Class id (1..K) of ``name`` (case-insensitive); CosynthError if it is not in this set."""
        key = normalise_name(name)
        for i, n in enumerate(self.names):
            if normalise_name(n) == key:
                return i + 1
        prefix = f"{where}: " if where else ""
        raise CosynthError(
            f"{prefix}unknown class {name!r} for taxonomy {self.key!r} (valid: {', '.join(self.names)})"
        )

    def name_of(self, class_id: int) -> str:
        if not 1 <= int(class_id) <= self.n_classes:
            raise CosynthError(f"class id {class_id} outside 1..{self.n_classes} of taxonomy {self.key!r}")
        return self.names[int(class_id) - 1]

    def color_of(self, class_id: int) -> RGB:
        return self.colors[int(class_id) - 1]

    def check_ids(self, ids: np.ndarray, *, where: str = "") -> None:
        """Raise CosynthError if any id is outside 1..K."""
        ids = np.asarray(ids)
        if ids.size == 0:
            return
        bad = (ids < 1) | (ids > self.n_classes)
        if bad.any():
            prefix = f"{where}: " if where else ""
            raise CosynthError(
                f"{prefix}class id {int(ids[bad][0])} is not in taxonomy {self.key!r} "
                f"(valid ids 1..{self.n_classes}: {', '.join(self.names)})"
            )

    def to_dict(self) -> dict:
        return {"key": self.key, "names": list(self.names), "colors": [list(c) for c in self.colors]}

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "taxonomy") -> "Taxonomy":
        """The inverse of :meth:`to_dict`; CosynthError naming ``where`` for a malformed record."""
        ok = (isinstance(d, dict) and isinstance(d.get("key"), str) and isinstance(d.get("names"), list)
              and isinstance(d.get("colors"), list) and len(d["names"]) == len(d["colors"]) and len(d["names"]) > 0
              and all(isinstance(n, str) and n for n in d["names"]) and len(set(d["names"])) == len(d["names"])
              and all(isinstance(c, list) and len(c) == 3
                      and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
                      for c in d["colors"]))
        if not ok:
            raise CosynthError(
                f"{where}: malformed taxonomy record (expected {{key: str, names: [unique str, ...], "
                f"colors: [[r, g, b] in 0..255, one per name]}}, got {str(d)[:80]})")
        try:
            return cls(key=d["key"], names=tuple(d["names"]),
                       colors=tuple(tuple(c) for c in d["colors"]))  # type: ignore[arg-type]
        except CosynthError as exc:
            raise CosynthError(f"{where}: {exc}") from None

    @classmethod
    def from_names(cls, key: str, names: list[str]) -> "Taxonomy":
        """A taxonomy over ``names`` with colours from a fixed palette (for ad-hoc class sets)."""
        return cls(key=key, names=tuple(names), colors=tuple(_PALETTE[i % len(_PALETTE)] for i in range(len(names))))


_PALETTE: tuple[RGB, ...] = (
    (255, 0, 0), (0, 200, 0), (0, 0, 255), (255, 200, 0), (255, 0, 255),
    (0, 200, 200), (255, 128, 0), (128, 0, 255), (128, 128, 128), (0, 128, 64),
)

BUILTIN: dict[str, Taxonomy] = {
    t.key: t
    for t in (
        # HoVer-Net's merged CoNSeP set, in CoNSeP's id order (1 other .. 4 spindle).
        Taxonomy("consep", ("other", "inflammatory", "epithelial", "spindle"),
                 ((255, 200, 0), (0, 200, 0), (255, 0, 0), (0, 0, 255))),
        # PanNuke channel order 0..4 (channel 5 is background).
        Taxonomy("pannuke", ("neoplastic", "inflammatory", "connective", "dead", "epithelial"),
                 ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 165, 0))),
        # Lizard/CoNIC class ids 1..6.
        Taxonomy("lizard", ("neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective"),
                 ((0, 255, 255), (255, 0, 0), (0, 255, 0), (0, 128, 255), (255, 0, 255), (255, 200, 0))),
        Taxonomy("monusac", ("epithelial", "lymphocyte", "macrophage", "neutrophil"),
                 ((255, 0, 0), (255, 255, 0), (0, 255, 0), (0, 0, 255))),
        Taxonomy("nucls", ("non-tumor", "tumor"), ((0, 160, 255), (255, 0, 0))),
        # histolytics' hgsc type masks: 1 connective, 2 inflammatory, 3 neoplastic.
        Taxonomy("histolytics", ("connective", "inflammatory", "neoplastic"),
                 ((0, 0, 255), (0, 255, 0), (255, 0, 0))),
        # One class for annotations without classes (MoNuSeg, Kumar, unclassified QuPath detections).
        Taxonomy("nucleus", ("nucleus",), ((255, 0, 0),)),
    )
}

# Class names that mean "a nucleus of no particular class" (normalised): MoNuSeg/Aperio and
# HoVer-Net without types say "nucleus", QuPath and GeoParquet tables "unclassified".
UNCLASSIFIED_NAMES: frozenset[str] = frozenset({"nucleus", "nuclei", "unclassified", "cell", "detection"})


def is_unclassified(name: str) -> bool:
    """True if ``name`` means a nucleus with no class (see :data:`UNCLASSIFIED_NAMES`)."""
    return normalise_name(name) in UNCLASSIFIED_NAMES


def with_default_class(class_map: dict[str, str] | None, default_class: str | None) -> dict[str, str] | None:
    """``class_map`` plus every unclassified name -> ``default_class`` (the user's own entries win)."""
    if default_class is None:
        return class_map
    merged = {name: str(default_class) for name in UNCLASSIFIED_NAMES}
    merged.update(class_map or {})
    return merged

# Built-in aliases: source name -> target names to try, first one present in the target wins.
_ALIASES: dict[str, tuple[str, ...]] = {
    "lymphocyte": ("inflammatory",),
    "neutrophil": ("inflammatory",),
    "macrophage": ("inflammatory",),
    "macrophage-cell": ("macrophage", "inflammatory"),
    "macrophage-nucleus": ("macrophage", "inflammatory"),
    "plasma": ("inflammatory",),
    "eosinophil": ("inflammatory",),
    "inflammatory": ("lymphocyte",),
    "neoplastic": ("epithelial", "tumor"),
    "tumor": ("neoplastic", "epithelial"),
    "epithelial": ("neoplastic", "tumor"),
    "connective": ("spindle",),
    "fibroblast": ("spindle", "connective"),
    "spindle": ("connective",),
    "spindle-shaped": ("spindle", "connective"),
    "dead": ("other",),
    "necrosis": ("dead", "other"),
    "non-tumor": ("other",),
    "unclassified": ("nucleus",),
    "nuclei": ("nucleus",),
    "cell": ("nucleus",),
    "detection": ("nucleus",),
}


def get_taxonomy(key: str) -> Taxonomy:
    """A built-in taxonomy by key; CosynthError listing the valid keys otherwise."""
    try:
        return BUILTIN[key.lower()]
    except KeyError:
        raise CosynthError(f"unknown taxonomy {key!r} (valid: {', '.join(BUILTIN)})") from None


def load_class_map(path: str | Path) -> dict[str, str]:
    """Read a user's YAML class map ``{source_name: target_name}``."""
    p, data = read_yaml_file(path, "class map")
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise CosynthError(f"class map {p} must be a flat mapping of class name -> class name")
    return {normalise_name(k): v for k, v in data.items()}


def map_name(name: str, target: Taxonomy, class_map: dict[str, str] | None = None, *, where: str = "") -> int:
    """Class id in ``target`` for a source class ``name``: user map, same name, then aliases."""
    key = normalise_name(name)
    if class_map and key in class_map:
        return target.id_of(class_map[key], where=where or "class map")
    targets = {normalise_name(n): i + 1 for i, n in enumerate(target.names)}
    if key in targets:
        return targets[key]
    for alias in _ALIASES.get(key, ()):
        if alias in targets:
            return targets[alias]
    prefix = f"{where}: " if where else ""
    raise CosynthError(
        f"{prefix}class {name!r} has no mapping into taxonomy {target.key!r} "
        f"({', '.join(target.names)}); add it to a --class-map YAML file"
    )


def class_mapping(
    source: Taxonomy, target: Taxonomy, class_map: dict[str, str] | None = None
) -> np.ndarray:
    """Lookup table ``lut`` with ``lut[source_id] = target_id`` (``lut[0] = 0``)."""
    lut = np.zeros(source.n_classes + 1, dtype=np.int64)
    for i, name in enumerate(source.names):
        lut[i + 1] = map_name(name, target, class_map, where=f"taxonomy {source.key!r}")
    return lut
