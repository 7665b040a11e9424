"""Report figures drawn with Pillow (no plotting library needed): bars, histograms, sample grids.

Every function returns a ``PIL.Image.Image`` (RGB); the caller saves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..records import LabelledTile
from ..render import outlines
from ..taxonomy import Taxonomy

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
SERIES_COLORS: tuple[RGB, ...] = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))
_W, _H = 720, 420
_MARGIN_L, _MARGIN_R, _MARGIN_T, _MARGIN_B = 70, 20, 50, 70


def _font(size: int = 14) -> "ImageFont.ImageFont | ImageFont.FreeTypeFont":
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _axes(
    title: str, ylabel: str, y_max: float, xlabel: str = ""
) -> tuple["Image.Image", "ImageDraw.ImageDraw", tuple[int, int, int, int]]:
    """A blank canvas with a title, a y axis from 0 to ``y_max`` with 5 ticks, and a draw handle."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (_W, _H), "white")
    draw = ImageDraw.Draw(img)
    font = _font(14)
    draw.text((_W // 2, 18), title, fill="black", font=_font(16), anchor="mm")
    x0, x1, y0, y1 = _MARGIN_L, _W - _MARGIN_R, _H - _MARGIN_B, _MARGIN_T
    draw.line([(x0, y1), (x0, y0), (x1, y0)], fill="black", width=1)
    for i in range(6):
        v = y_max * i / 5
        y = y0 - (y0 - y1) * i / 5
        draw.line([(x0 - 4, y), (x0, y)], fill="black")
        draw.line([(x0 + 1, y), (x1, y)], fill=(230, 230, 230))
        draw.text((x0 - 6, y), f"{v:.3g}", fill="black", font=_font(12), anchor="rm")
    draw.text((14, (y0 + y1) // 2), ylabel, fill="black", font=font, anchor="lm")
    if xlabel:
        draw.text(((x0 + x1) // 2, _H - 16), xlabel, fill="black", font=font, anchor="mm")
    return img, draw, (x0, x1, y0, y1)


def _legend(draw: "ImageDraw.ImageDraw", labels: Sequence[str], colors: Sequence[RGB]) -> None:
    x = _W - _MARGIN_R - 170
    for i, (label, color) in enumerate(zip(labels, colors)):
        y = _MARGIN_T + 6 + 20 * i
        draw.rectangle([x, y, x + 14, y + 12], fill=color)
        draw.text((x + 20, y + 6), label, fill="black", font=_font(13), anchor="lm")


def bar_chart(
    categories: Sequence[str], series: dict[str, Sequence[float]], *, title: str, ylabel: str
) -> "Image.Image":
    """Grouped bars: one group per category, one bar per series (e.g. real vs synthetic)."""
    values = np.array([list(v) for v in series.values()], dtype=np.float64)
    y_max = float(np.nanmax(values)) * 1.1 if values.size and np.nanmax(values) > 0 else 1.0
    img, draw, (x0, x1, y0, y1) = _axes(title, ylabel, y_max)
    n_cat, n_ser = len(categories), len(series)
    group_w = (x1 - x0) / max(n_cat, 1)
    bar_w = group_w * 0.8 / max(n_ser, 1)
    for c, cat in enumerate(categories):
        gx = x0 + c * group_w + group_w * 0.1
        for s in range(n_ser):
            v = values[s, c]
            if not np.isfinite(v):
                continue
            top = y0 - (y0 - y1) * v / y_max
            draw.rectangle([gx + s * bar_w, top, gx + (s + 1) * bar_w - 2, y0], fill=SERIES_COLORS[s % len(SERIES_COLORS)])
        draw.text((x0 + (c + 0.5) * group_w, y0 + 14), cat, fill="black", font=_font(13), anchor="mm")
    _legend(draw, list(series), SERIES_COLORS)
    return img


def histogram_chart(
    samples: dict[str, np.ndarray], *, title: str, xlabel: str, bins: int = 30, x_max: float | None = None
) -> "Image.Image":
    """Overlaid density histograms (step outlines) of several samples on shared bins.

    The range is [0, ``x_max``] (default: the pooled 99th percentile); larger values count in the last bin.
    """
    pooled = np.concatenate([np.asarray(v, dtype=np.float64) for v in samples.values()] or [np.zeros(0)])
    hi = x_max if x_max is not None else (float(np.percentile(pooled, 99)) if pooled.size else 1.0)
    hi = hi if hi > 0 else 1.0
    edges = np.linspace(0.0, hi, bins + 1)
    dens = {k: np.histogram(np.clip(v, 0, hi), bins=edges, density=True)[0] if len(v) else np.zeros(bins) for k, v in samples.items()}
    y_max = max((float(d.max()) for d in dens.values()), default=0.0) * 1.1 or 1.0
    img, draw, (x0, x1, y0, y1) = _axes(title, "density", y_max, xlabel)
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        draw.text((x, y0 + 12), f"{hi * i / 5:.3g}", fill="black", font=_font(12), anchor="mm")
    for s, d in enumerate(dens.values()):
        color = SERIES_COLORS[s % len(SERIES_COLORS)]
        pts = []
        for b in range(bins):
            xa = x0 + (x1 - x0) * b / bins
            xb = x0 + (x1 - x0) * (b + 1) / bins
            y = y0 - (y0 - y1) * d[b] / y_max
            pts += [(xa, y), (xb, y)]
        draw.line([(x0, y0)] + pts + [(x1, y0)], fill=color, width=2)
    _legend(draw, [f"{k} (n={len(v)})" for k, v in samples.items()], SERIES_COLORS)
    return img


def sample_grid(
    rows: dict[str, Sequence[LabelledTile]], taxonomy: Taxonomy, *, tile_px: int = 256
) -> "Image.Image":
    """One row per set (e.g. real, synthetic) of outlined tiles, with a row label and a class legend."""
    from PIL import Image, ImageDraw

    n_cols = max((len(v) for v in rows.values()), default=0) or 1
    label_w, pad, legend_h = 90, 4, 28
    width = label_w + n_cols * (tile_px + pad) + pad
    height = legend_h + len(rows) * (tile_px + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = pad
    for k, name in enumerate(taxonomy.names, start=1):
        draw.rectangle([x, 8, x + 14, 22], fill=taxonomy.color_of(k))
        draw.text((x + 18, 15), name, fill="black", font=_font(13), anchor="lm")
        x += 26 + int(draw.textlength(name, font=_font(13)))
    for r, (label, tiles) in enumerate(rows.items()):
        y = legend_h + pad + r * (tile_px + pad)
        draw.text((pad, y + tile_px // 2), label, fill="black", font=_font(14), anchor="lm")
        for c, tile in enumerate(tiles):
            im = Image.fromarray(outlines(tile, taxonomy)).resize((tile_px, tile_px), Image.NEAREST)
            canvas.paste(im, (label_w + pad + c * (tile_px + pad), y))
    return canvas
