"""Nuclei detection over a whole slide: overlapping windows over its tissue, a seam-free merge,
QuPath detections out.

The slide's tissue is cut into cores of ``core`` px at the detector's resolution (the export's
tile grid, tissue detection included); each core is read with a ``halo`` of context on every
side, so a nucleus on a core border lies whole inside both windows that contain it. Each window
keeps the nuclei whose centroid lies in its core widened by ``band`` px; when the windows are
assembled, in grid order, a nucleus near a core border that a window before already wrote (a
centroid within ``same_nucleus`` px) is not written again. So a nucleus whose centroid the two
windows place a pixel apart, on either side of the border, is written once: not twice (both
claim it) nor never (each leaves it to the other). Windows are independent tasks (in-process or
on Dask, any order); the merge, at assembly, makes the output the same wherever they ran.

Resumable: the work directory ``.<name>.work/`` beside the output holds the run's settings and
one JSON file per finished window (its candidate nuclei, their centroids and border flags), each
written atomically; a rerun with the same settings skips the finished windows and the output is
assembled from them at the end, atomically (a killed run never leaves a half-written file).
Memory: one window per task, plus the centroids near core borders while assembling.
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


def _window_candidates(detector: Detector, image: np.ndarray, name: str, origin_level0: tuple[float, float],
                       scale: float, options: DetectOptions) -> dict:
    """One window's nuclei whose centroid lies in its core widened by ``band``: their features,
    level-0 centroids and whether each lies near a core border (a neighbour may see it again)."""
    from ..exporters.geojson import tile_features

    found = detector.predict(image)
    n = len(found)
    if n == 0:
        return {"features": [], "centres": [], "near_border": []}
    centre = instance_centroids(found.instances, n)  # window px
    lo, hi = options.halo - options.band, options.halo + options.core + options.band
    candidate = (centre[:, 0] >= lo) & (centre[:, 0] < hi) & (centre[:, 1] >= lo) & (centre[:, 1] < hi)
    edge = options.band + options.same_nucleus
    near_border = ((np.abs(centre[:, 0] - options.halo) < edge) | (np.abs(centre[:, 0] - options.halo - options.core) < edge)
                   | (np.abs(centre[:, 1] - options.halo) < edge) | (np.abs(centre[:, 1] - options.halo - options.core) < edge))
    keep = np.flatnonzero(candidate)
    if not len(keep):
        return {"features": [], "centres": [], "near_border": []}
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[keep + 1] = np.arange(1, len(keep) + 1, dtype=np.int32)
    tile = LabelledTile(image=image, instances=remap[found.instances], classes=found.classes[keep],
                        taxonomy=detector.taxonomy, provenance=Provenance(name=name, mpp=detector.mpp),
                        placement=SlidePlacement(x0=float(origin_level0[0]), y0=float(origin_level0[1]), scale=scale))
    features = tile_features(tile)
    for feature, conf in zip(features, found.confidence[keep]):
        feature["properties"]["measurements"][CONFIDENCE] = round(float(conf), 4)
    level0 = centre[keep] * scale + np.asarray(origin_level0)
    return {"features": features, "centres": np.round(level0, 3).tolist(), "near_border": near_border[keep].tolist()}


@dataclass(frozen=True)
class WindowJob:
    """A batch of windows for one task, wherever it runs: the slide, the detector, the windows
    as (index, level-0 x, level-0 y of the core, level-0 px per detector px, name)."""

    slide: str
    slide_mpp: float | None
    detector: Detector
    options: DetectOptions
    work: str
    windows: tuple[tuple[int, float, float, float, str], ...]
    threads: int | None = None


def detect_windows(job: WindowJob) -> int:
    """Detect the nuclei of ``job``'s windows, one atomic part file per window; the count written."""
    from ..slide import open_slide

    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    reader = open_slide(job.slide, slide_mpp=job.slide_mpp)
    try:
        o = job.options
        side = o.core + 2 * o.halo
        for index, x, y, scale, name in job.windows:
            origin = (x - o.halo * scale, y - o.halo * scale)
            image = reader.read_region(origin, (side, side), job.detector.mpp)
            found = _window_candidates(job.detector, image, name, origin, scale, o)
            write_text_atomic(Path(job.work) / _part_name(index), json.dumps(found, separators=(",", ":")))
    finally:
        reader.close()
    return len(job.windows)


def _part_name(index: int) -> str:
    return f"w{index:07d}.json"


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


WINDOWS_PER_TASK = 8  # windows of one task: ~8 x 2 s of work, a few hundred kB of result files


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
    workers: int = 0,
    scheduler: str | None = None,
    worker_threads: int | None = None,
) -> DetectResult:
    """Detect the nuclei of ``slide``'s tissue and write them to ``out`` (a GeoJSON FeatureCollection
    of QuPath detections: one Polygon per nucleus in level-0 px, its class, its confidence; or
    GeoParquet when ``out`` ends in .parquet).

    ``digest`` identifies the detector for resuming (:func:`detector_digest`). Windows run as
    tasks of WINDOWS_PER_TASK in this process, on ``workers`` local Dask processes or at
    ``scheduler`` (each with ``worker_threads`` torch threads); the output does not depend on where
    or in what order they ran (the merge is made when the windows are assembled, in grid order).

    Raises
    ------
    CosynthError
        Unreadable slide, no resolution, no tissue, an existing output without ``overwrite``, a
        resume with other settings without ``restart``.
    """
    from tqdm import tqdm

    from ..pipeline.execution import Task, TaskRunner
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
    with output_lock(out_path):
        with plan_slide(slide_path, None, mpp=detector.mpp, tile_size=options.core, min_tissue=options.min_tissue,
                        slide_mpp=slide_mpp, sidecar=False, pad=WHITE) as plan:
            positions = list(plan.positions())
        if not positions:
            raise CosynthError(f"slide {slide_path}: no tissue found to detect nuclei in")
        if restart and work.exists():
            shutil.rmtree(work)
        if resume_manifest(work / MANIFEST, "params", params, what="detection") is None:
            work.mkdir(parents=True, exist_ok=True)
            write_text_atomic(work / MANIFEST, json.dumps({"params": params}, indent=1))
        todo = [(pos.index, float(pos.x_level0), float(pos.y_level0), float(pos.scale), pos.name) for pos in positions
                if not _finished(work / _part_name(pos.index))]
        tasks = (Task(f"detect-{k}", detect_windows,
                      (WindowJob(str(slide_path), slide_mpp, detector, options, str(work),
                                 tuple(todo[k:k + WINDOWS_PER_TASK]), worker_threads),))
                 for k in range(0, len(todo), WINDOWS_PER_TASK))
        bar = tqdm(total=len(positions), initial=len(positions) - len(todo), disable=not progress,
                   desc=f"detect {slide_path.name}", unit="window", dynamic_ncols=True)
        try:
            with TaskRunner(workers=workers, scheduler=scheduler) as runner:
                runner.run(tasks, lambda task, n: bar.update(n))
        finally:
            bar.close()
        header = {"detector": digest, "slide": str(slide_path.resolve()), "mpp": detector.mpp}
        index = _BorderIndex(cell=4 * options.same_nucleus * positions[0].scale + 1.0)
        merged = _merged_features(work, positions, index, options.same_nucleus * positions[0].scale)
        assemble = _assemble_geoparquet if out_path.suffix.lower() == ".parquet" else _assemble
        n, classes = assemble(merged, out_path, header)
    shutil.rmtree(work, ignore_errors=True)
    return DetectResult(path=out_path, n_nuclei=n, n_windows=len(positions),
                        megapixels=len(positions) * (options.core ** 2) / 1e6,
                        seconds=time.perf_counter() - start, classes=classes)


def _finished(part: Path) -> bool:
    """A window's part file is there and whole (a damaged one is removed: detect it again)."""
    if not part.is_file():
        return False
    try:
        found = json.loads(part.read_text())
        if len(found["features"]) == len(found["centres"]) == len(found["near_border"]):
            return True
    except (ValueError, KeyError, TypeError, OSError):
        pass
    part.unlink(missing_ok=True)
    return False


def _merged_features(work: Path, positions: list, index: _BorderIndex, radius: float):
    """The windows' features in grid order, less the nuclei a window before already wrote: a
    nucleus near a core border is skipped when a kept one lies within ``radius`` level-0 px."""
    for pos in positions:
        found = json.loads((work / _part_name(pos.index)).read_text())
        for feature, (x, y), near in zip(found["features"], found["centres"], found["near_border"]):
            if near:
                if index.near(x, y, radius):
                    continue  # a neighbour window already wrote it
                index.add(x, y)
            yield feature


def _assemble(features, out: Path, header: dict) -> tuple[int, dict[str, int]]:
    """Write ``features`` as one FeatureCollection, atomically; (count, per class).
    ``header``: what made them (detector digest, slide), a foreign member ``wsi_cosynth``."""
    n = 0
    classes: dict[str, int] = {}
    with atomic_path(out) as tmp, open(tmp, "w") as fh:
        fh.write('{"type":"FeatureCollection","wsi_cosynth":' + json.dumps(header, separators=(",", ":")) + ',"features":[')
        for feature in features:
            fh.write(("," if n else "") + json.dumps(feature, separators=(",", ":")))
            n += 1
            name = feature["properties"]["classification"]["name"]
            classes[name] = classes.get(name, 0) + 1
        fh.write("]}")
    return n, classes


PARQUET_ROWS = 65536  # nuclei per row group: bounded memory on a whole slide


def _assemble_geoparquet(features, out: Path, header: dict) -> tuple[int, dict[str, int]]:
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
        for feature in features:
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
