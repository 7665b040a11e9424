"""Nuclei instances over a whole synthesised region, block by block, with no nucleus cut or doubled.

The point-guided watershed (:func:`wsi_cosynth.instances.separate_instances`) runs on the region's
fused distance map and label in blocks that reach ``halo`` px beyond their core; the region's
points are the markers. A nucleus belongs to the block whose core holds its centroid, and takes
its pixels where no earlier block painted one: since every block sees a nucleus whole (the halo
is wider than a nucleus) and the maps are one fused state, a nucleus on a block border is found
the same way from both sides and written once.

Each block's nuclei are traced into QuPath detection Features (the GeoJSON exporter's own
tracing, one Polygon per nucleus with its class) in the synthetic slide's level-0 pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from ..exporters.geojson import tile_collection_json
from ..instances import instance_centroids, separate_instances
from ..records import LabelledTile, Provenance, SlidePlacement
from ..taxonomy import Taxonomy
from .region_plan import RegionPlan
from .region_store import RegionStore
from .worker import release_free_heap

_HEAD, _TAIL = '{"type":"FeatureCollection","features":[', "]}"


@dataclass(frozen=True)
class InstanceSummary:
    """Nuclei written: their count and (N,) int64 classes of instance ids 1..N."""

    n_nuclei: int
    classes: np.ndarray


def separate_region_instances(
    store: RegionStore,
    plan: RegionPlan,
    taxonomy: Taxonomy,
    geojson: TextIO,
    *,
    block: int = 1024,
    halo: int = 64,
    on_block: Callable[[], None] | None = None,
) -> InstanceSummary:
    """Fill ``store.instances`` (ids 1..N over the region) and write the nuclei to ``geojson``.

    ``geojson``: an open text file that receives one FeatureCollection. Reads the maps of the
    region's output area (``plan.size_hw``) from ``store``; ``on_block`` is called after each block.
    """
    h, w = plan.size_hw
    store.clear_instances()  # a rerun of this pass starts from nothing (first-writer-wins below)
    classes_out: list[np.ndarray] = []
    next_id = 1
    geojson.write(_HEAD)
    first = True
    for bi, y0 in enumerate(range(0, h, block)):
        for bj, x0 in enumerate(range(0, w, block)):
            y1, x1 = min(h, y0 + block), min(w, x0 + block)
            cy0, cy1, cx0, cx1 = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
            distance = np.clip((np.asarray(store.distance[cy0:cy1, cx0:cx1], dtype=np.float32) + 1) / 2, 0, 1)
            semantic = np.asarray(store.label[cy0:cy1, cx0:cx1], dtype=np.int64)
            inside = ((plan.xy[:, 0] >= cx0) & (plan.xy[:, 0] < cx1) & (plan.xy[:, 1] >= cy0) & (plan.xy[:, 1] < cy1))
            local, local_classes = separate_instances(distance, semantic, plan.xy[inside] - [cx0, cy0],
                                                      plan.classes[inside], unmarked="drop")
            n = len(local_classes)
            centre = instance_centroids(local, n)[:, ::-1] + [cy0, cx0]  # (row, col)
            owned = (centre[:, 0] >= y0) & (centre[:, 0] < y1) & (centre[:, 1] >= x0) & (centre[:, 1] < x1)
            painted = store.instances[cy0:cy1, cx0:cx1]
            candidate = np.concatenate([[0], np.where(owned, np.arange(1, n + 1), 0)])[local]
            claim = (candidate > 0) & (painted == 0)
            kept = np.unique(candidate[claim])  # owned ids that kept pixels, ascending
            remap = np.zeros(n + 1, dtype=np.int64)
            remap[kept] = np.arange(1, len(kept) + 1)
            tile_ids = np.where(claim, remap[candidate], 0).astype(np.int32)
            painted[claim] = (tile_ids[claim] + (next_id - 1)).astype(np.uint32)
            tile_classes = local_classes[kept - 1] if len(kept) else np.zeros(0, dtype=np.int64)
            if len(kept):
                tile = LabelledTile(
                    image=np.asarray(store.image[cy0:cy1, cx0:cx1]), instances=tile_ids, classes=tile_classes,
                    taxonomy=taxonomy, provenance=Provenance(name=f"{plan.stem}_synthetic_r{bi}_c{bj}", mpp=plan.mpp),
                    placement=SlidePlacement(x0=float(cx0), y0=float(cy0), scale=1.0),
                )
                text = tile_collection_json(tile)
                inner = text[len(_HEAD):-len(_TAIL)]
                if inner:
                    geojson.write(("" if first else ",") + inner)
                    first = False
            classes_out.append(tile_classes)
            next_id += len(kept)
            del painted
            store.release_pages()
            release_free_heap()
            if on_block is not None:
                on_block()
    geojson.write(_TAIL)
    store.instances.flush()
    classes = np.concatenate(classes_out) if classes_out else np.zeros(0, dtype=np.int64)
    return InstanceSummary(n_nuclei=next_id - 1, classes=classes)
