"""PNG preview of layouts: a grid of panels, one dot per nucleus in its class colour."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import CosynthError
from ..records import UNCLASSIFIED, Layout

UNCLASSIFIED_COLOUR = (96, 96, 96)  # nuclei of unknown class: dark grey


def render_layout(layout: Layout, *, radius_px: float = 3.0, background: int = 255) -> np.ndarray:
    """(H, W, 3) uint8 image of ``layout``: filled discs of ``radius_px`` in the class colours."""
    h, w = layout.size
    img = np.full((h, w, 3), background, dtype=np.uint8)
    rr, cc = np.mgrid[-int(np.ceil(radius_px)):int(np.ceil(radius_px)) + 1,
                      -int(np.ceil(radius_px)):int(np.ceil(radius_px)) + 1]
    disc = rr ** 2 + cc ** 2 <= radius_px ** 2
    dr, dc = rr[disc], cc[disc]
    for (x, y), c in zip(layout.xy_tile, layout.classes):
        r = np.clip(int(y) + dr, 0, h - 1)
        col = np.clip(int(x) + dc, 0, w - 1)
        img[r, col] = layout.taxonomy.color_of(int(c)) if c != UNCLASSIFIED else UNCLASSIFIED_COLOUR
    return img


def write_preview(layouts: Sequence[Layout], path: str | Path, *, columns: int = 8, max_layouts: int = 64) -> None:
    """Write up to ``max_layouts`` layouts as a PNG grid (grey 2 px gutters), atomically."""
    from PIL import Image

    if len(layouts) == 0:
        raise CosynthError(f"preview {path}: no layouts to draw")
    panels = [render_layout(lay) for lay in layouts[:max_layouts]]
    ph = max(p.shape[0] for p in panels)
    pw = max(p.shape[1] for p in panels)
    cols = min(columns, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    gut = 2
    canvas = np.full((rows * (ph + gut) + gut, cols * (pw + gut) + gut, 3), 128, dtype=np.uint8)
    for i, p in enumerate(panels):
        r, c = divmod(i, cols)
        y, x = gut + r * (ph + gut), gut + c * (pw + gut)
        canvas[y:y + p.shape[0], x:x + p.shape[1]] = p
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="PNG")
