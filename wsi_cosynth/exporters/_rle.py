"""COCO run-length encoding for whole instance maps at once (docs/FORMATS.md 3.2).

Runs are over the column-major (Fortran) flattening of an (H, W) mask and alternate
0, 1, 0, ... starting with zeros. Encoding every instance of a map in one pass over its runs keeps
writing O(H * W) per tile instead of O(H * W * N); decoding paints runs straight into the map.
"""

from __future__ import annotations

import numpy as np


def instance_runs(instances: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal non-zero ids in the column-major flattening of an instance map.

    Returns
    -------
    ids, starts, ends : (R,) int64 each, sorted by (id, start); ``ends`` exclusive.
    """
    flat = np.asarray(instances).ravel(order="F")
    if flat.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change]).astype(np.int64)
    ends = np.concatenate([change, [flat.size]]).astype(np.int64)
    ids = flat[starts].astype(np.int64)
    keep = ids > 0
    ids, starts, ends = ids[keep], starts[keep], ends[keep]
    order = np.lexsort((starts, ids))
    return ids[order], starts[order], ends[order]


def uncompressed_rles(instances: np.ndarray, n: int) -> list[list[int]]:
    """Uncompressed COCO RLE counts for instance ids 1..n of an (H, W) map (empty list if absent)."""
    return counts_from_runs(*instance_runs(instances), n, int(np.asarray(instances).size))


def counts_from_runs(ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, n: int, total: int) -> list[list[int]]:
    """Uncompressed COCO RLE counts for ids 1..n from :func:`instance_runs` of a map of ``total`` pixels."""
    out: list[list[int]] = [[] for _ in range(n)]
    if len(ids) == 0:
        return out
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    prev_end = np.empty_like(ends)
    prev_end[0] = 0
    prev_end[1:] = ends[:-1]
    prev_end[first] = 0
    gaps = starts - prev_end
    lengths = ends - starts
    bounds = np.flatnonzero(first).tolist() + [len(ids)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        counts = np.empty(2 * (b - a) + 1, dtype=np.int64)
        counts[0:-1:2] = gaps[a:b]
        counts[1:-1:2] = lengths[a:b]
        counts[-1] = total - ends[b - 1]
        out[int(ids[a]) - 1] = counts.tolist()
    return out


def boxes_and_areas_from_runs(
    ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, n: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-id bounding boxes and pixel counts from :func:`instance_runs` of an (height, W) map.

    Returns (N, 4) int64 (row_min, row_max_excl, col_min, col_max_excl), as
    geometry.instance_bboxes, and (N,) int64 areas; an absent id gets zeros. A run lies in one
    column unless it wraps past the bottom row, and then it covers every row of the box.
    """
    boxes = np.zeros((n, 4), dtype=np.int64)
    if len(ids) == 0:
        return boxes, np.zeros(n, dtype=np.int64)
    last = ends - 1
    col0, col1 = starts // height, last // height
    wraps = col0 != col1
    row0 = np.where(wraps, 0, starts % height)
    row1 = np.where(wraps, height - 1, last % height)
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    rows = ids[first] - 1
    boxes[rows, 0] = np.minimum.reduceat(row0, first)
    boxes[rows, 1] = np.maximum.reduceat(row1, first) + 1
    boxes[rows, 2] = np.minimum.reduceat(col0, first)  # runs of an id are sorted by start
    boxes[rows, 3] = np.maximum.reduceat(col1, first) + 1
    areas = np.bincount(ids - 1, weights=ends - starts, minlength=n)[:n].astype(np.int64)
    return boxes, areas


def decode_counts_string(s: str | bytes) -> list[int]:
    """COCO compressed RLE string -> uncompressed counts (maskApi.c rleFrString)."""
    data = s.encode("ascii") if isinstance(s, str) else bytes(s)
    counts: list[int] = []
    p = 0
    n = len(data)
    while p < n:
        x = 0
        k = 0
        more = True
        while more:
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def paint_counts(flat_out: np.ndarray, counts: list[int], value: int) -> int:
    """Set the 'ones' runs of uncompressed ``counts`` to ``value`` in a Fortran-flat array.

    Returns the number of pixels painted.
    """
    pos = 0
    painted = 0
    size = flat_out.size
    for i, c in enumerate(counts):
        c = int(c)
        if i % 2 == 1 and c > 0:
            end = min(pos + c, size)
            flat_out[pos:end] = value
            painted += end - pos
        pos += c
    return painted
