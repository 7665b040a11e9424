"""Write a slide's tiles as PNGs with an index (CSV + JSON), a tissue mask and an overview image.

The output directory is built under a temporary name and appears only when complete.
"""

from __future__ import annotations

import csv
import io
import json
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..errors import CosynthError
from ..png import encode_png, write_png
from .planning import SlidePlan, iter_slide_tiles, plan_slide

INDEX_COLUMNS = ("name", "x_level0", "y_level0", "col", "row", "extent_level0", "tissue_fraction", "tissue", "n_nuclei")
OVERVIEW_MAX_SIDE = 1024
PNG_THREADS = 2
PNG_BACKLOG = 8


def overview_image(plan: SlidePlan) -> np.ndarray:
    """(H, W, 3) uint8 slide thumbnail with the tissue mask tinted green and tile outlines in red."""
    from PIL import Image, ImageDraw

    reader = plan.reader
    w0, h0 = reader.dimensions
    mpp = max(reader.mpp, max(w0, h0) * reader.mpp / OVERVIEW_MAX_SIDE)
    thumb = reader.read_thumbnail(mpp)
    th, tw = thumb.shape[:2]
    mask = np.asarray(Image.fromarray(plan.tissue_mask.mask.astype(np.uint8) * 255).resize((tw, th), Image.Resampling.NEAREST)) > 0
    tinted = thumb.astype(np.float32)
    tinted[mask] = 0.7 * tinted[mask] + 0.3 * np.array([0, 200, 0], dtype=np.float32)
    image = Image.fromarray(np.clip(tinted, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    s = reader.mpp / mpp  # overview pixels per level-0 pixel
    for x0, y0, x1, y1 in plan.grid.boxes_level0():
        # A tile smaller than an overview pixel still gets a 1-px outline (PIL needs x1 >= x0).
        draw.rectangle([x0 * s, y0 * s, max(x0 * s, x1 * s - 1), max(y0 * s, y1 * s - 1)], outline=(255, 0, 0))
    return np.asarray(image)


def write_tiles(
    slide: str | Path,
    annotations: str | Path | None,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = False,
    **plan_options: Any,
) -> dict:
    """Tile a slide into ``out`` (see :mod:`wsi_cosynth.commands.tiles` for the layout).

    Returns
    -------
    dict with ``n_tiles``, ``n_nuclei`` and ``warnings``.
    """
    from tqdm import tqdm

    from ..slide.tissue import mask_png_bytes

    out_dir = Path(out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise CosynthError(f"output {out_dir} exists and is not an empty directory (choose a new path or --overwrite)")
    with plan_slide(slide, annotations, **plan_options) as plan:
        rows: list[dict] = []
        with atomic_path(out_dir) as tmp:
            (tmp / "tiles").mkdir(parents=True)
            bar = tqdm(total=len(plan.grid), disable=not progress, desc=f"tiles {plan.stem}", unit="tile")
            # PNG encoding (numpy and libdeflate release the GIL) runs in background threads,
            # at most PNG_BACKLOG tiles behind the reads.
            pool = ThreadPoolExecutor(max_workers=PNG_THREADS, thread_name_prefix="tile-png")
            pending: deque[Future] = deque()
            try:
                for tile in iter_slide_tiles(plan):
                    pos = tile.position
                    pending.append(pool.submit(write_png, tmp / "tiles" / f"{pos.name}.png", tile.image))
                    while len(pending) > PNG_BACKLOG:
                        pending.popleft().result()
                    rows.append({
                        "name": pos.name, "x_level0": pos.x_level0, "y_level0": pos.y_level0, "col": pos.col,
                        "row": pos.row, "extent_level0": round(pos.tile_size * pos.scale, 4),
                        "tissue_fraction": round(pos.tissue_fraction, 4), "tissue": pos.tissue or "",
                        "n_nuclei": int(len(tile.nuclei.point_indices)),
                    })
                    bar.update(1)
                while pending:
                    pending.popleft().result()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                bar.close()
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            (tmp / "index.csv").write_text(buf.getvalue())
            index = {
                "slide": str(plan.reader.path), "slide_mpp": plan.reader.mpp, "slide_size_level0": list(plan.reader.dimensions),
                "mpp": plan.target_mpp, "tile_size": plan.grid.tile_size, "stride": plan.grid.stride,
                "annotations": plan.annotations.source if plan.annotations is not None else None,
                "tissue_mask": {"file": "tissue_mask.png", "mpp": plan.tissue_mask.mpp,
                                "threshold": plan.tissue_mask.threshold, "channel": plan.tissue_mask.params.channel},
                "tiles": rows,
            }
            (tmp / "index.json").write_text(json.dumps(index, indent=1))
            (tmp / "tissue_mask.png").write_bytes(mask_png_bytes(plan.tissue_mask.mask))
            (tmp / "thumbnail.png").write_bytes(encode_png(overview_image(plan)))
        return {"n_tiles": len(rows), "n_nuclei": int(sum(r["n_nuclei"] for r in rows)), "warnings": list(plan.warnings)}
