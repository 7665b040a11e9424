"""Resolution arithmetic for slide reads: pure functions, no I/O.

Frames: ``location`` / ``xy_level0`` are level-0 pixels (x, y); a level ``L`` with downsample
``ds_L`` has pixel ``x_L = x_level0 / ds_L``. ``size`` is output pixels (width, height) at the
requested microns per pixel (mpp). The scale from output pixels to level-0 pixels is
``target_mpp / slide_mpp`` (> 1 when reading coarser than the scan).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import CosynthError

# Two downsamples closer than this (relative) are treated as equal, so that a level stored at
# 3.9999 is used for a request of 4.0 instead of falling back to the finer level.
REL_TOLERANCE = 1e-3


def validate_mpp(mpp: float, name: str = "mpp") -> float:
    """``mpp`` as float; CosynthError unless it is finite and positive."""
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise CosynthError(f"{name} must be a number of microns per pixel, got {mpp!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise CosynthError(f"{name} must be a positive number of microns per pixel, got {mpp!r}")
    return value


def scale_to_level0(target_mpp: float, slide_mpp: float) -> float:
    """Level-0 pixels per output pixel when reading at ``target_mpp`` from a ``slide_mpp`` scan."""
    return validate_mpp(target_mpp, "target mpp") / validate_mpp(slide_mpp, "slide mpp")


def best_level(level_downsamples: Sequence[float], downsample: float) -> int:
    """The coarsest pyramid level that is still at least as fine as ``downsample``.

    Reading from it and shrinking keeps all the detail the request needs with the fewest
    pixels decoded (TIAToolbox's rule); a request finer than level 0 uses level 0.

    Parameters
    ----------
    level_downsamples : per-level downsample factors relative to level 0, ascending from 1.
    downsample : requested level-0 pixels per output pixel.
    """
    best = 0
    for i, ds in enumerate(level_downsamples):
        if ds <= downsample * (1.0 + REL_TOLERANCE) and ds >= level_downsamples[best]:
            best = i
    return best


@dataclass(frozen=True)
class LevelWindow:
    """The pixels to read on one level for one request, and where the request lies inside them.

    ``x_level``/``y_level``/``w_level``/``h_level``: integer window on the level (may extend past
    the level's edges; the reader pads with white). ``box``: the request as a float box
    (x0, y0, x1, y1) in the window's own pixel frame, for an area-resampling resize.
    """

    level: int
    x_level: int
    y_level: int
    w_level: int
    h_level: int
    box: tuple[float, float, float, float]


def level_window(
    location_level0: tuple[float, float],
    size: tuple[int, int],
    scale: float,
    level: int,
    level_downsample: float,
) -> LevelWindow:
    """The window on ``level`` that covers an output request.

    Parameters
    ----------
    location_level0 : (x, y) of the request's top-left corner in level-0 pixels.
    size : (width, height) of the output in pixels.
    scale : level-0 pixels per output pixel (:func:`scale_to_level0`).
    level, level_downsample : the pyramid level read and its downsample factor.
    """
    x0 = float(location_level0[0]) / level_downsample
    y0 = float(location_level0[1]) / level_downsample
    x1 = (float(location_level0[0]) + size[0] * scale) / level_downsample
    y1 = (float(location_level0[1]) + size[1] * scale) / level_downsample
    # Integer window around the float request, with one pixel of context for the resampling
    # filter only when the request does not fall exactly on the level's pixel grid.
    exact = all(abs(v - round(v)) < 1e-6 for v in (x0, y0, x1, y1))
    margin = 0 if exact else 1
    xi, yi = math.floor(x0 + 1e-9) - margin, math.floor(y0 + 1e-9) - margin
    xe, ye = math.ceil(x1 - 1e-9) + margin, math.ceil(y1 - 1e-9) + margin
    return LevelWindow(
        level=level,
        x_level=int(xi),
        y_level=int(yi),
        w_level=int(max(xe - xi, 1)),
        h_level=int(max(ye - yi, 1)),
        box=(x0 - xi, y0 - yi, x1 - xi, y1 - yi),
    )


def output_shape_for(extent_level0: tuple[float, float], scale: float) -> tuple[int, int]:
    """(width, height) in output pixels of a level-0 extent (w, h), rounded down, at least 1."""
    return (max(int(extent_level0[0] / scale), 1), max(int(extent_level0[1] / scale), 1))
