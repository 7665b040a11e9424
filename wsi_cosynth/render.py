"""Pictures of labelled tiles: instance outlines coloured by class, label maps, tile grids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.segmentation import find_boundaries

from .records import LabelledTile
from .taxonomy import Taxonomy


def class_colour_lut(tile: LabelledTile, taxonomy: Taxonomy | None = None) -> np.ndarray:
    """(N + 1, 3) uint8 colour per instance id (0 = black) from ``taxonomy`` (default: the tile's)."""
    tax = taxonomy or tile.taxonomy
    colours = np.array([(0, 0, 0)] + [tax.color_of(c) for c in tile.classes], dtype=np.uint8)
    return colours.reshape(-1, 3)


def outlines(tile: LabelledTile, taxonomy: Taxonomy | None = None) -> np.ndarray:
    """(H, W, 3) uint8: the tile's image with each nucleus outlined in its class colour."""
    out = tile.image.copy()
    edge = find_boundaries(tile.instances, mode="inner")
    out[edge] = class_colour_lut(tile, taxonomy)[tile.instances[edge]]
    return out


def label_image(tile: LabelledTile) -> np.ndarray:
    """(H, W, 3) uint8: nuclei filled with their class colour on black, outlines in white."""
    out = class_colour_lut(tile)[tile.instances]
    out[find_boundaries(tile.instances, mode="inner")] = 255
    return out


def tile_grid(panels: Sequence[np.ndarray], *, columns: int, gap: int = 4) -> np.ndarray:
    """Arrange equally sized (H, W, 3) uint8 panels row by row on a white canvas."""
    if not panels:
        return np.full((8, 8, 3), 255, np.uint8)
    h, w = panels[0].shape[:2]
    rows = -(-len(panels) // columns)
    canvas = np.full((rows * (h + gap) + gap, columns * (w + gap) + gap, 3), 255, np.uint8)
    for i, panel in enumerate(panels):
        r, c = divmod(i, columns)
        y, x = gap + r * (h + gap), gap + c * (w + gap)
        canvas[y : y + h, x : x + w] = panel
    return canvas


def preview(tiles: Sequence[LabelledTile], *, max_tiles: int = 12, pairs_per_row: int = 3,
            references: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
    """A grid of tiles, each shown as (image with outlines, label image) side by side; with
    ``references`` (one real (H, W, 3) uint8 tile or None per tile), as (real tile, image with
    outlines, label image), the real tile it stands for first (white where there is none)."""
    panels = []
    for i, tile in enumerate(list(tiles)[:max_tiles]):
        if references is not None:
            real = references[i] if i < len(references) else None
            panels.append(real if real is not None and real.shape == tile.image.shape else np.full_like(tile.image, 255))
        panels += [outlines(tile), label_image(tile)]
    per_tile = 3 if references is not None else 2
    return tile_grid(panels, columns=per_tile * (2 if references is not None else pairs_per_row))


def save_png(path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as PNG atomically."""
    from .atomic import write_bytes_atomic
    from .png import encode_png

    write_bytes_atomic(path, encode_png(rgb))
