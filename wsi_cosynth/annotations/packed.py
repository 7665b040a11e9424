"""A slide's nucleus outlines as packed arrays instead of one Python/GEOS object per polygon.

:class:`PackedGeometries` keeps N geometries as one WKB byte buffer (the encoding of a
GeoParquet geometry column) with (N + 1,) offsets, plus the per-geometry numbers every query
needs as plain arrays: bounds (N, 4), centroids (N, 2), areas (N,) and geometry type ids (N,).
A 16-vertex polygon costs ~350 bytes here against ~1.3 KB as a shapely object; shapely
geometries are decoded only for the few nuclei a tile touches (:meth:`take`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely


@dataclass(frozen=True)
class PackedGeometries:
    """N geometries in level-0 pixels, packed.

    wkb : (B,) uint8, the WKB of geometry i at ``wkb[offsets[i]:offsets[i + 1]]``.
    offsets : (N + 1,) int64. bounds : (N, 4) float64 (x0, y0, x1, y1). centroids : (N, 2)
    float64 (x, y). areas : (N,) float64. type_ids : (N,) int8 (shapely ids: 0 Point,
    3 Polygon, 6 MultiPolygon).
    """

    wkb: np.ndarray
    offsets: np.ndarray
    bounds: np.ndarray
    centroids: np.ndarray
    areas: np.ndarray
    type_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.wkb, self.offsets, self.bounds, self.centroids, self.areas, self.type_ids))

    @classmethod
    def empty(cls) -> "PackedGeometries":
        return cls(np.zeros(0, np.uint8), np.zeros(1, np.int64), np.zeros((0, 4)), np.zeros((0, 2)),
                   np.zeros(0), np.zeros(0, np.int8))

    @classmethod
    def pack(cls, geoms: Sequence | np.ndarray) -> "PackedGeometries":
        """Pack an (N,) array of shapely geometries (not None)."""
        arr = np.asarray(geoms, dtype=object).reshape(-1)
        if not len(arr):
            return cls.empty()
        blobs = shapely.to_wkb(arr)
        lengths = np.fromiter((len(b) for b in blobs), dtype=np.int64, count=len(blobs))
        offsets = np.zeros(len(arr) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        c = shapely.centroid(arr)
        return cls(
            wkb=np.frombuffer(b"".join(blobs), dtype=np.uint8),
            offsets=offsets,
            bounds=shapely.bounds(arr).astype(np.float64),
            centroids=np.stack([shapely.get_x(c), shapely.get_y(c)], axis=1).astype(np.float64),
            areas=shapely.area(arr).astype(np.float64),
            type_ids=shapely.get_type_id(arr).astype(np.int8),
        )

    @classmethod
    def concat(cls, parts: list["PackedGeometries"], *, consume: bool = False) -> "PackedGeometries":
        """The geometries of ``parts`` in order. ``consume=True`` empties the list while copying,
        so the peak is the result plus one part (when nothing else holds the parts)."""
        sizes = [(len(p), len(p.wkb)) for p in parts]
        n, nb = sum(s[0] for s in sizes), sum(s[1] for s in sizes)
        if len(parts) == 1 and not consume:
            return parts[0]
        out = cls(np.empty(nb, np.uint8), np.zeros(n + 1, np.int64), np.empty((n, 4)), np.empty((n, 2)),
                  np.empty(n), np.empty(n, np.int8))
        i = b = 0
        for k in range(len(parts)):
            p = parts[k]
            m, mb = len(p), len(p.wkb)
            out.wkb[b:b + mb] = p.wkb
            out.offsets[i + 1:i + m + 1] = p.offsets[1:] + b
            out.bounds[i:i + m], out.centroids[i:i + m] = p.bounds, p.centroids
            out.areas[i:i + m], out.type_ids[i:i + m] = p.areas, p.type_ids
            i, b = i + m, b + mb
            if consume:
                parts[k] = None  # type: ignore[call-overload]
                del p
        if consume:
            parts.clear()
        return out

    def take(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """(K,) object array of shapely geometries for ``indices`` (decoded now, not cached)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty(len(idx), dtype=object)
        if len(idx):
            o = self.offsets
            out[:] = shapely.from_wkb([self.wkb[o[i]:o[i + 1]].tobytes() for i in idx])
        return out

    def subset(self, indices: np.ndarray) -> "PackedGeometries":
        """The geometries at ``indices`` (in that order), still packed."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        lengths = self.offsets[idx + 1] - self.offsets[idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # Byte positions of every kept geometry, gathered in one vectorised step.
        within = np.arange(int(offsets[-1]), dtype=np.int64) - np.repeat(offsets[:-1], lengths)
        src = np.repeat(self.offsets[idx], lengths) + within
        return PackedGeometries(self.wkb[src], offsets, self.bounds[idx], self.centroids[idx], self.areas[idx],
                                self.type_ids[idx])

    def box_tree(self) -> shapely.STRtree:
        """STRtree over the geometries' bounding boxes (tree index i = geometry i)."""
        b = self.bounds
        return shapely.STRtree(shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3]))
