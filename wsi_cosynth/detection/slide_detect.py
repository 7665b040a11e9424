"""Nuclei detection over a whole slide: overlapping windows over its tissue, a seam-free merge,
QuPath detections out.

The slide's tissue is cut into cores of ``core`` px at the detector's resolution (the export's
tile grid, tissue detection included); each core is read with a ``halo`` of context on every
side, so a nucleus on a core border lies whole inside both windows that contain it. Each window
keeps the nuclei whose centroid lies in its core widened by ``band`` px; a nucleus a neighbouring
window has already written (a centroid within ``same_nucleus`` px) is not written again. So a
nucleus whose centroid the two windows place a pixel apart, on either side of the border, is
written once: not twice (both claim it) nor never (each leaves it to the other).

Resumable: the work directory ``.<name>.work/`` beside the output holds the run's settings and
one JSON file per finished window (its features and the centroids near its borders), each written
atomically; a rerun with the same settings skips the finished windows and the final GeoJSON is
assembled from them at the end, atomically (a killed run never leaves a half-written file).
Memory: one window, plus the centroids near core borders seen so far.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, output_lock, write_text_atomic
from ..errors import CosynthError
from ..instances import instance_centroids
from ..records import LabelledTile, Provenance, SlidePlacement
from .model import Detector

MANIFEST = "manifest.json"
WHITE = (255, 255, 255)  # what a window shows beyond the slide's edge (glass)
CONFIDENCE = "Detection confidence"  # the measurement QuPath shows for each detection


@dataclass(frozen=True)
class DetectOptions:
    """Window geometry and tissue filter (detector px)."""

    core: int = 512
    halo: int = 48
    band: int = 8
    same_nucleus: float = 6.0
    min_tissue: float = 0.02


@dataclass(frozen=True)
class DetectResult:
    """What :func:`detect_slide` wrote."""

    path: Path
    n_nuclei: int
    n_windows: int
    megapixels: float
    seconds: float
    classes: dict[str, int]


class _BorderIndex:
    """Level-0 centroids written near core borders, in a grid of cells for neighbour look-ups."""

    def __init__(self, cell: float) -> None:
        self.cell = float(cell)
        self.cells: dict[tuple[int, int], list[tuple[float, float]]] = {}

    def add(self, x: float, y: float) -> None:
        self.cells.setdefault((int(x // self.cell), int(y // self.cell)), []).append((x, y))

    def near(self, x: float, y: float, radius: float) -> bool:
        cx, cy = int(x // self.cell), int(y // self.cell)
        r2 = radius * radius
        for i in (cx - 1, cx, cx + 1):
            for j in (cy - 1, cy, cy + 1):
                for px, py in self.cells.get((i, j), ()):
                    if (px - x) ** 2 + (py - y) ** 2 <= r2:
                        return True
        return False


def _window_features(detector: Detector, image: np.ndarray, name: str, origin_level0: tuple[float, float], scale: float,
                     options: DetectOptions, index: _BorderIndex) -> tuple[list[dict], list[list[float]]]:
    """The features of one window's nuclei to write, and the level-0 centroids near its borders."""
    from ..exporters.geojson import tile_features

    found = detector.predict(image)
    n = len(found)
    if n == 0:
        return [], []
    centre = instance_centroids(found.instances, n)  # window px
    lo, hi = options.halo - options.band, options.halo + options.core + options.band
    candidate = (centre[:, 0] >= lo) & (centre[:, 0] < hi) & (centre[:, 1] >= lo) & (centre[:, 1] < hi)
    level0 = centre * scale + np.asarray(origin_level0)
    radius = options.same_nucleus * scale
    # Centroids this close to a core border may be seen again by a neighbour window.
    edge = options.band + options.same_nucleus
    near_border = ((np.abs(centre[:, 0] - options.halo) < edge) | (np.abs(centre[:, 0] - options.halo - options.core) < edge)
                   | (np.abs(centre[:, 1] - options.halo) < edge) | (np.abs(centre[:, 1] - options.halo - options.core) < edge))
    keep, border = [], []
    for k in np.flatnonzero(candidate):
        x, y = level0[k]
        if near_border[k]:
            if index.near(x, y, radius):
                continue  # a neighbour already wrote it
            index.add(x, y)
            border.append([round(float(x), 2), round(float(y), 2)])
        keep.append(k)
    if not keep:
        return [], border
    keep_arr = np.asarray(keep)
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[keep_arr + 1] = np.arange(1, len(keep_arr) + 1, dtype=np.int32)
    tile = LabelledTile(image=image, instances=remap[found.instances], classes=found.classes[keep_arr],
                        taxonomy=detector.taxonomy, provenance=Provenance(name=name, mpp=detector.mpp),
                        placement=SlidePlacement(x0=float(origin_level0[0]), y0=float(origin_level0[1]), scale=scale))
    features = tile_features(tile)
    for feature, conf in zip(features, found.confidence[keep_arr]):
        feature["properties"]["measurements"][CONFIDENCE] = round(float(conf), 4)
    return features, border


def _params(detector_digest: str, slide: Path, slide_mpp: float | None, options: DetectOptions) -> dict:
    return {"detector": detector_digest, "slide": str(slide.resolve()), "slide_mpp": slide_mpp,
            "core": options.core, "halo": options.halo, "band": options.band, "same_nucleus": options.same_nucleus,
            "min_tissue": options.min_tissue}


def detector_digest(directory: Path) -> str:
    """SHA-256 (16 hex) of a detector directory's two files: a run resumes only with the same detector."""
    from .model import CONFIG, WEIGHTS

    h = hashlib.sha256()
    for name in (CONFIG, WEIGHTS):
        h.update((directory / name).read_bytes())
    return h.hexdigest()[:16]


def detect_slide(
    slide: str | Path,
    out: str | Path,
    detector: Detector,
    *,
    digest: str,
    slide_mpp: float | None = None,
    options: DetectOptions = DetectOptions(),
    overwrite: bool = False,
    restart: bool = False,
    progress: bool = False,
) -> DetectResult:
    """Detect the nuclei of ``slide``'s tissue and write them to ``out`` (a GeoJSON FeatureCollection
    of QuPath detections: one Polygon per nucleus in level-0 px, its class, its confidence).

    ``digest`` identifies the detector for resuming (:func:`detector_digest`).

    Raises
    ------
    CosynthError
        Unreadable slide, no resolution, no tissue, an existing output without ``overwrite``, a
        resume with other settings without ``restart``.
    """
    from tqdm import tqdm

    from ..pipeline.planning import plan_slide
    from ..pipeline.workdir import resume_manifest

    if options.core < 32 or options.halo < 0 or options.band < 0 or options.band > options.halo:
        raise CosynthError(f"detection windows need core >= 32 and 0 <= band <= halo (got {options})")
    start = time.perf_counter()
    slide_path, out_path = Path(slide), Path(out)
    if out_path.exists() and not overwrite:
        raise CosynthError(f"output {out_path} exists (choose another --out or pass --overwrite)")
    work = out_path.parent / f".{out_path.name}.work"
    params = _params(digest, slide_path, slide_mpp, options)
    with output_lock(out_path), plan_slide(slide_path, None, mpp=detector.mpp, tile_size=options.core,
                                           min_tissue=options.min_tissue, slide_mpp=slide_mpp, sidecar=False,
                                           pad=WHITE) as plan:
        positions = list(plan.positions())
        if not positions:
            raise CosynthError(f"slide {slide_path}: no tissue found to detect nuclei in")
        if restart and work.exists():
            shutil.rmtree(work)
        if resume_manifest(work / MANIFEST, "params", params, what="detection") is None:
            work.mkdir(parents=True, exist_ok=True)
            write_text_atomic(work / MANIFEST, json.dumps({"params": params}, indent=1))
        index = _BorderIndex(cell=4 * options.same_nucleus * positions[0].scale + 1.0)
        done = 0
        bar = tqdm(total=len(positions), disable=not progress, desc=f"detect {slide_path.name}", unit="window",
                   dynamic_ncols=True)
        try:
            for pos in positions:
                part = work / f"w{pos.index:07d}.json"
                if part.is_file():
                    try:  # a finished window: its border centroids rejoin the index
                        for x, y in json.loads(part.read_text())["border"]:
                            index.add(x, y)
                        done += 1
                        bar.update(1)
                        continue
                    except (ValueError, KeyError, TypeError, OSError):
                        part.unlink(missing_ok=True)  # damaged: detect the window again
            for pos in positions:
                part = work / f"w{pos.index:07d}.json"
                if part.is_file():
                    continue
                s, halo = pos.scale, options.halo
                origin = (pos.x_level0 - halo * s, pos.y_level0 - halo * s)
                side = options.core + 2 * halo
                image = plan.reader.read_region(origin, (side, side), detector.mpp)
                features, border = _window_features(detector, image, pos.name, origin, s, options, index)
                write_text_atomic(part, json.dumps({"features": features, "border": border}, separators=(",", ":")))
                bar.update(1)
        finally:
            bar.close()
        header = {"detector": digest, "slide": str(slide_path.resolve()), "mpp": detector.mpp}
        assemble = _assemble_geoparquet if out_path.suffix.lower() == ".parquet" else _assemble
        n, classes = assemble(work, positions, out_path, header)
        mpx = len(positions) * (options.core ** 2) / 1e6
    shutil.rmtree(work, ignore_errors=True)
    return DetectResult(path=out_path, n_nuclei=n, n_windows=len(positions), megapixels=mpx,
                        seconds=time.perf_counter() - start, classes=classes)


def _assemble(work: Path, positions: list, out: Path, header: dict) -> tuple[int, dict[str, int]]:
    """Write the windows' features as one FeatureCollection, atomically; (count, per class).
    ``header``: what made them (detector digest, slide), a foreign member ``wsi_cosynth``."""
    n = 0
    classes: dict[str, int] = {}
    with atomic_path(out) as tmp, open(tmp, "w") as fh:
        fh.write('{"type":"FeatureCollection","wsi_cosynth":' + json.dumps(header, separators=(",", ":")) + ',"features":[')
        first = True
        for pos in positions:
            for feature in json.loads((work / f"w{pos.index:07d}.json").read_text())["features"]:
                fh.write(("" if first else ",") + json.dumps(feature, separators=(",", ":")))
                first = False
                n += 1
                name = feature["properties"]["classification"]["name"]
                classes[name] = classes.get(name, 0) + 1
        fh.write("]}")
    return n, classes


PARQUET_ROWS = 65536  # nuclei per row group: bounded memory on a whole slide


def _assemble_geoparquet(work: Path, positions: list, out: Path, header: dict) -> tuple[int, dict[str, int]]:
    """The same nuclei as GeoParquet (GeoParquet 1.0: WKB ``geometry`` in level-0 px, ``class_name``,
    ``confidence``, ``area_px2`` in level-0 px), written atomically in row groups; ``header`` in the
    schema metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    geo = {"version": "1.0.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Polygon"]}}}
    schema = pa.schema([("geometry", pa.binary()), ("class_name", pa.string()), ("confidence", pa.float32()),
                        ("area_px2", pa.float64())],
                       metadata={b"geo": json.dumps(geo).encode(), b"wsi_cosynth": json.dumps(header).encode()})
    n = 0
    classes: dict[str, int] = {}
    rows: dict[str, list] = {name: [] for name in schema.names}

    def flush(writer) -> None:
        if rows["geometry"]:
            writer.write_table(pa.table(rows, schema=schema))
            for column in rows.values():
                column.clear()

    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for pos in positions:
            for feature in json.loads((work / f"w{pos.index:07d}.json").read_text())["features"]:
                props = feature["properties"]
                name = props["classification"]["name"]
                polygon = shapely.from_geojson(json.dumps(feature["geometry"]))
                rows["geometry"].append(shapely.to_wkb(polygon))
                rows["class_name"].append(name)
                rows["confidence"].append(props["measurements"][CONFIDENCE])
                rows["area_px2"].append(float(polygon.area))
                classes[name] = classes.get(name, 0) + 1
                n += 1
                if len(rows["geometry"]) >= PARQUET_ROWS:
                    flush(writer)
        flush(writer)
    return n, classes
