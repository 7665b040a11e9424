"""The slide's own look for a synthetic export: the real tile behind each layout, read once for
its colour statistics (the reference its synthetic tile is matched to, wsi_cosynth/colour.py)
and, for the first few, its pixels (shown beside the synthetic tile in the preview).

``colour_match``: ``tile`` matches each synthetic tile to the real tile at its position,
``slide`` to the statistics of all those tiles together (the slide's look, smoothing over
tile-to-tile changes such as a tile that is mostly lumen), ``none`` keeps the model's colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..colour import ColourStats, colour_stats
from ..errors import CosynthError
from ..records import Layout
from .planning import SlidePlan

ColourMatch = Literal["tile", "slide", "none"]
COLOUR_MATCHES: tuple[str, ...] = ("tile", "slide", "none")


@dataclass
class SlideLook:
    """Colour references by layout name (empty for ``none``) and real tiles for the preview."""

    colours: dict[str, ColourStats] = field(default_factory=dict)
    real_tiles: dict[str, np.ndarray] = field(default_factory=dict)


def read_slide_look(plan: SlidePlan, layouts: list[Layout], colour_match: str, *, preview: int = 12) -> SlideLook:
    """Read the real tile of each layout (named by its tile position) for ``colour_match``; the
    first ``preview`` are kept for the preview. Layouts at no position of the plan get none."""
    if colour_match not in COLOUR_MATCHES:
        raise CosynthError(f"unknown --colour-match {colour_match!r} (valid: {', '.join(COLOUR_MATCHES)})")
    positions = {pos.name: pos for pos in plan.positions()}
    look = SlideLook()
    wanted = layouts if colour_match != "none" else layouts[:preview]
    stats: dict[str, ColourStats] = {}
    pixels: list[np.ndarray] = []
    for lay in wanted:
        pos = positions.get(lay.provenance.name)
        if pos is None:
            continue
        image = plan.read_tile(pos)
        if len(look.real_tiles) < preview:
            look.real_tiles[lay.provenance.name] = image
        if colour_match == "tile":
            stats[lay.provenance.name] = colour_stats(image)
        elif colour_match == "slide":
            pixels.append(image[::4, ::4])  # a 1/16 sample of every tile is plenty for six numbers
    if colour_match == "slide" and pixels:
        whole = colour_stats(pixels)
        stats = {name: whole for name in (lay.provenance.name for lay in wanted) if name in positions}
    look.colours = stats
    return look


def colours_digest(colours: dict[str, ColourStats]) -> str:
    """A short fingerprint of the colour references (part of a run's settings, for resume)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(colours):
        h.update(name.encode())
        h.update(np.round(np.array(colours[name].mean + colours[name].std), 4).tobytes())
    return h.hexdigest()[:16]
