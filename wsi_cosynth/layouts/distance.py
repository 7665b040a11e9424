"""Per-nucleus distance maps from instance maps (the ``d`` modality of the joint model).

For nucleus n with pixel set P_n and anchor c_n (its centroid, see :func:`nucleus_anchors`),
every pixel p in P_n gets ``1 - |p - c_n| / max_{q in P_n} |q - c_n|`` and background gets 0
(docs/METHOD.md, "distance map"). Pixel positions are pixel centres ``(col + 0.5, row + 0.5)`` in
tile pixels, the frame of :class:`wsi_cosynth.records.Layout`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import CosynthError


def _validate_instances(instances: np.ndarray, name: str = "instances") -> np.ndarray:
    inst = np.asarray(instances)
    if inst.ndim != 2:
        raise CosynthError(f"{name} must be a 2-D (H, W) instance map, got shape {inst.shape}")
    if not np.issubdtype(inst.dtype, np.integer):
        raise CosynthError(f"{name} must be an integer instance map, got dtype {inst.dtype}")
    if inst.size and int(inst.min()) < 0:
        raise CosynthError(f"{name} has negative ids (min {int(inst.min())}); 0 is background, ids > 0")
    return inst.astype(np.int64, copy=False)


def nucleus_anchors(instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The point that stands for each nucleus: its centroid, or the nearest own pixel to it.

    The centroid (mean of the pixel centres) is used when the pixel containing it,
    ``(floor(y), floor(x))``, belongs to the nucleus. For a concave nucleus whose centroid falls
    on background or on another nucleus, the anchor is the centre of the nucleus's own pixel
    nearest to the centroid (ties: first in row-major order). So an anchor always lies on its
    nucleus, a point map rasterised from anchors puts each marker on its own nucleus, and the
    distance-map peak sits at the marker.

    Parameters
    ----------
    instances : (H, W) integer array, 0 = background, ids > 0 (need not be contiguous).

    Returns
    -------
    ids : (N,) int64, the ids present, ascending.
    xy_tile : (N, 2) float64, anchors (x, y) in tile pixels.
    """
    inst = _validate_instances(instances)
    ids = np.unique(inst)
    ids = ids[ids > 0]
    if len(ids) == 0:
        return ids, np.zeros((0, 2), dtype=np.float64)
    rows, cols = np.nonzero(inst)
    lab = np.searchsorted(ids, inst[rows, cols])
    count = np.bincount(lab, minlength=len(ids)).astype(np.float64)
    x = np.bincount(lab, weights=cols + 0.5, minlength=len(ids)) / count
    y = np.bincount(lab, weights=rows + 0.5, minlength=len(ids)) / count
    h, w = inst.shape
    r0 = np.clip(np.floor(y).astype(np.int64), 0, h - 1)
    c0 = np.clip(np.floor(x).astype(np.int64), 0, w - 1)
    outside = np.flatnonzero(inst[r0, c0] != ids)
    if len(outside):
        # Rare (concave nuclei): per offending nucleus, search only its own pixels.
        order = np.argsort(lab, kind="stable")
        starts = np.concatenate([[0], np.cumsum(np.bincount(lab, minlength=len(ids)))])
        for k in outside:
            sel = order[starts[k]:starts[k + 1]]
            d2 = (cols[sel] + 0.5 - x[k]) ** 2 + (rows[sel] + 0.5 - y[k]) ** 2
            j = sel[int(np.argmin(d2))]
            x[k], y[k] = cols[j] + 0.5, rows[j] + 0.5
    return ids, np.stack([x, y], axis=1)


def distance_map(instances: np.ndarray) -> np.ndarray:
    """Normalised per-nucleus distance-to-anchor map.

    Parameters
    ----------
    instances : (H, W) integer array, 0 = background, ids > 0.

    Returns
    -------
    (H, W) float32 in [0, 1]: ``1 - |p - c| / max_{q in nucleus} |q - c|`` inside each nucleus
    (c from :func:`nucleus_anchors`: the centroid, or the nucleus pixel nearest to it when the
    centroid falls outside a concave nucleus), 0 on background. A one-pixel nucleus is 1. The
    pixel(s) farthest from the anchor are 0, like the background they border.

    Raises
    ------
    CosynthError
        If ``instances`` is not a 2-D integer array of non-negative ids.

    Examples
    --------
    >>> inst = np.zeros((5, 5), dtype=np.int32); inst[1:4, 1:4] = 1
    >>> float(distance_map(inst)[2, 2])
    1.0
    """
    inst = _validate_instances(instances)
    out = np.zeros(inst.shape, dtype=np.float32)
    ids, xy = nucleus_anchors(inst)
    if len(ids) == 0:
        return out
    rows, cols = np.nonzero(inst)
    lab = np.searchsorted(ids, inst[rows, cols])
    r = np.hypot(cols + 0.5 - xy[lab, 0], rows + 0.5 - xy[lab, 1])
    r_max = ndimage.maximum(r, labels=lab, index=np.arange(len(ids)))
    r_max = np.asarray(r_max, dtype=np.float64)
    denom = r_max[lab]
    # A one-pixel nucleus has r_max = 0: it is all peak.
    val = np.where(denom > 0, 1.0 - r / np.where(denom > 0, denom, 1.0), 1.0)
    out[rows, cols] = np.clip(val, 0.0, 1.0).astype(np.float32)
    return out
