"""The records every stage passes on: a tile's nuclei layout and a labelled tile.

Frames: ``xy_tile`` is in tile pixels (x right, y down, origin at the tile's top-left pixel
corner, so a pixel (row r, col c) has its centre at (c + 0.5, r + 0.5)); slide-level positions
are level-0 pixels of the source slide (``x_slide``/``y_slide`` of the tile's top-left corner).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .errors import CosynthError
from .taxonomy import Taxonomy

# Class id of a layout nucleus whose class is not known (MoNuSeg-style annotations): a nucleus,
# but of no particular class of the taxonomy. Only a :class:`Layout` may hold it; a model that
# supports unclassified nuclei (config ``model.unknown_class``) draws it as its unknown point.
UNCLASSIFIED = 0


@dataclass(frozen=True)
class Provenance:
    """Where a tile came from.

    ``x_slide``/``y_slide``: level-0 pixel of the tile's top-left corner (None if not from a
    slide); ``mpp``: microns per pixel of the tile's pixels; ``source``: slide or file path;
    ``name``: a stem unique within a dataset (used for file names; contains no '-' or '/');
    ``synthetic``: the pixels were made by a generative model (e.g. a slide written by
    ``wsi-cosynth synthesize``), stored as ``"synthetic": true`` only when set;
    ``patient``/``split``: the patient of the source slide and the split (train, val, test) of a
    cohort dataset, stored only when set; ``labels_by``: the model that made the tile's labels
    (e.g. a nuclei detector on a slide nobody annotated), stored only when set: such labels are
    not a pathologist's.
    """

    name: str
    source: str | None = None
    x_slide: float | None = None
    y_slide: float | None = None
    mpp: float | None = None
    tissue: str | None = None
    synthetic: bool = False
    patient: str | None = None
    split: str | None = None
    labels_by: str | None = None

    def to_dict(self) -> dict:
        d = {
            "name": self.name,
            "source": self.source,
            "x_slide": self.x_slide,
            "y_slide": self.y_slide,
            "mpp": self.mpp,
            "tissue": self.tissue,
        }
        if self.synthetic:
            d["synthetic"] = True
        for key in ("patient", "split", "labels_by"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Provenance":
        return cls(**{k: d.get(k) for k in ("name", "source", "x_slide", "y_slide", "mpp", "tissue")},
                   synthetic=d.get("synthetic") is True,
                   **{k: d[k] for k in ("patient", "split", "labels_by") if isinstance(d.get(k), str)})


@dataclass(frozen=True)
class SlidePlacement:
    """How tile pixels map to level-0 slide pixels: ``xy_slide = origin + xy_tile * scale``."""

    x0: float
    y0: float
    scale: float

    def tile_to_slide(self, xy_tile: np.ndarray) -> np.ndarray:
        """(N, 2) tile-pixel (x, y) -> (N, 2) level-0 slide-pixel (x, y)."""
        return np.asarray(xy_tile, dtype=np.float64) * self.scale + np.array([self.x0, self.y0])

    def slide_to_tile(self, xy_slide: np.ndarray) -> np.ndarray:
        """(N, 2) level-0 slide-pixel (x, y) -> (N, 2) tile-pixel (x, y)."""
        return (np.asarray(xy_slide, dtype=np.float64) - np.array([self.x0, self.y0])) / self.scale


@dataclass(frozen=True)
class Layout:
    """The nuclei of one tile as points.

    Attributes
    ----------
    xy_tile : (N, 2) float64
        Centroids in tile pixels, (x, y); must lie inside [0, width) x [0, height).
    classes : (N,) int64
        Class ids in ``taxonomy`` (1..K), or :data:`UNCLASSIFIED` (0) for a nucleus of unknown
        class.
    size : (height, width) of the tile in pixels.
    taxonomy : the class set ``classes`` refer to.
    provenance : name, source, slide position, mpp, tissue type.
    placement : tile -> level-0 slide mapping, when the tile stands for a slide region.
    """

    xy_tile: np.ndarray
    classes: np.ndarray
    size: tuple[int, int]
    taxonomy: Taxonomy
    provenance: Provenance
    placement: SlidePlacement | None = None

    def __post_init__(self) -> None:
        xy = np.asarray(self.xy_tile, dtype=np.float64).reshape(-1, 2)
        cls = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        object.__setattr__(self, "xy_tile", xy)
        object.__setattr__(self, "classes", cls)
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        where = f"layout {self.provenance.name!r}"
        if len(xy) != len(cls):
            raise CosynthError(f"{where}: {len(xy)} points but {len(cls)} classes")
        if len(cls):
            self.taxonomy.check_ids(cls[cls != UNCLASSIFIED], where=where)
            h, w = self.size
            outside = (xy[:, 0] < 0) | (xy[:, 0] >= w) | (xy[:, 1] < 0) | (xy[:, 1] >= h)
            if outside.any():
                i = int(np.flatnonzero(outside)[0])
                raise CosynthError(
                    f"{where}: {int(outside.sum())} point(s) outside the {w}x{h} tile, "
                    f"e.g. (x={xy[i, 0]:.1f}, y={xy[i, 1]:.1f})"
                )

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def unclassified(self) -> np.ndarray:
        """(N,) bool: the nuclei of unknown class."""
        return self.classes == UNCLASSIFIED

    @property
    def tissue(self) -> str | None:
        return self.provenance.tissue

    def with_tissue(self, tissue: str | None) -> "Layout":
        return replace(self, provenance=replace(self.provenance, tissue=tissue))


@dataclass(frozen=True)
class LabelledTile:
    """An image with its nuclei instance labels.

    Attributes
    ----------
    image : (H, W, 3) uint8 RGB
    instances : (H, W) int32, 0 = background, nucleus ids 1..N contiguous
    classes : (N,) int64, class of instance id k at index k-1 (1..K in ``taxonomy``)
    taxonomy : the class set ``classes`` refer to
    provenance : name, source, slide position, mpp, tissue type
    distance : optional (H, W) float32 in [0, 1] distance map
    placement : tile -> level-0 slide mapping, when the tile stands for a slide region
    """

    image: np.ndarray
    instances: np.ndarray
    classes: np.ndarray
    taxonomy: Taxonomy
    provenance: Provenance
    distance: np.ndarray | None = None
    placement: SlidePlacement | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        where = f"tile {self.provenance.name!r}"
        image = np.asarray(self.image)
        inst = np.asarray(self.instances)
        cls = np.asarray(self.classes).reshape(-1)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise CosynthError(f"{where}: image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        if inst.shape != image.shape[:2]:
            raise CosynthError(
                f"{where}: instance map shape {inst.shape} does not match image shape {image.shape[:2]}"
            )
        if not np.issubdtype(inst.dtype, np.integer):
            raise CosynthError(f"{where}: instance map must be integer, got {inst.dtype}")
        if inst.dtype != np.int32:
            if inst.size and int(inst.max()) > np.iinfo(np.int32).max:
                raise CosynthError(f"{where}: instance id {int(inst.max())} does not fit int32")
            inst = inst.astype(np.int32)
        n = int(inst.max()) if inst.size else 0
        if inst.size and int(inst.min()) < 0:
            raise CosynthError(f"{where}: negative instance ids")
        if len(cls) != n:
            raise CosynthError(f"{where}: instance ids go to {n} but {len(cls)} classes were given")
        if n:
            present = np.bincount(inst.ravel(), minlength=n + 1) > 0  # ids are in 0..n here
            if not present[1:].all():
                raise CosynthError(
                    f"{where}: instance ids must be contiguous 1..N (use relabel_contiguous), "
                    f"missing e.g. {int(np.flatnonzero(~present[1:])[0]) + 1}"
                )
            self.taxonomy.check_ids(cls, where=where)
        if self.distance is not None:
            d = np.asarray(self.distance, dtype=np.float32)
            if d.shape != inst.shape:
                raise CosynthError(f"{where}: distance map shape {d.shape} != instance map {inst.shape}")
            object.__setattr__(self, "distance", d)
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "instances", inst)
        object.__setattr__(self, "classes", cls.astype(np.int64))

    @property
    def n_nuclei(self) -> int:
        return len(self.classes)

    @property
    def size(self) -> tuple[int, int]:
        return (int(self.image.shape[0]), int(self.image.shape[1]))

    def semantic(self) -> np.ndarray:
        """(H, W) int64 class map: 0 background, else the class of the covering instance."""
        lut = np.concatenate([[0], self.classes]).astype(np.int64)
        return lut[self.instances]


_LUT_MIN_IDS = 1 << 20  # ids up to max(this, 4 x pixels) are counted with a table, not sorted


def present_ids(instances: np.ndarray) -> np.ndarray:
    """(K,) sorted positive ids present in an instance map (counted, not sorted, when ids are small)."""
    return _positive_ids(np.asarray(instances))[0]


def _positive_ids(inst: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Sorted positive ids, and the largest id when the map is small non-negative integers
    (then a lookup table of that size can relabel it), else None."""
    if inst.size and np.issubdtype(inst.dtype, np.integer):
        lo, hi = int(inst.min()), int(inst.max())
        if lo >= 0 and _table_fits(inst, hi):
            ids = np.flatnonzero(np.bincount(inst.ravel(), minlength=1))
            return ids[ids > 0], hi
    ids = np.unique(inst)
    return ids[ids > 0], None


def _table_fits(inst: np.ndarray, top: int) -> bool:
    """Whether ids of a non-negative map up to ``top`` are counted and relabelled by a table."""
    return np.issubdtype(inst.dtype, np.integer) and top <= max(_LUT_MIN_IDS, 4 * inst.size)


def relabel_contiguous(
    instances: np.ndarray, classes_by_id: dict[int, int] | np.ndarray | None = None, *,
    present: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Renumber instance ids to 1..N in ascending order of the old ids.

    Parameters
    ----------
    instances : (H, W) integer array, 0 = background, arbitrary positive ids.
    classes_by_id : mapping old id -> class, or an array indexed by old id; None gives zeros.
    present : :func:`present_ids` of a NON-NEGATIVE ``instances``, when the caller has them
        (saves a pass over the map).

    Returns
    -------
    new_instances : (H, W) int32 with ids 1..N.
    classes : (N,) int64 classes of the new ids (0 where unknown).
    """
    inst = np.asarray(instances)
    if present is None:
        old_ids, top = _positive_ids(inst)
    else:
        old_ids = np.asarray(present)
        top = int(old_ids[-1]) if len(old_ids) else 0
        top = top if _table_fits(inst, top) else None
    if len(old_ids) > np.iinfo(np.int32).max:
        raise CosynthError("too many instances for int32")
    if top is not None:
        # Small non-negative ids: one gather through a lookup table (old id -> rank + 1).
        lut = np.zeros(top + 1, dtype=np.int32)
        lut[old_ids] = np.arange(1, len(old_ids) + 1, dtype=np.int32)
        new = lut[inst]
    else:
        new = np.zeros(inst.shape, dtype=np.int32)
        if len(old_ids):
            # searchsorted maps every pixel's old id to its rank; background stays 0.
            ranks = np.searchsorted(old_ids, inst)
            fg = inst > 0
            new[fg] = ranks[fg].astype(np.int32) + 1
    classes = np.zeros(len(old_ids), dtype=np.int64)
    if classes_by_id is not None:
        if isinstance(classes_by_id, dict):
            classes = np.array([int(classes_by_id.get(int(i), 0)) for i in old_ids], dtype=np.int64)
        else:
            arr = np.asarray(classes_by_id)
            classes = arr[old_ids].astype(np.int64)
    return new, classes
