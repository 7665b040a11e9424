"""Region synthesis: co-synthesise a whole tissue region in one fused joint sampling and write it
as a synthetic slide.

slide + annotations -> region, canvas at the model's mpp, points (:mod:`.region_plan`) -> chunks
of the canvas in raster order (:func:`.window_plan.plan_chunks`), each one sampling of windows
fused at every step and continuing the chunks before it (:mod:`.region_fusion`) -> the region's
latent, distance and label on disk (:mod:`.region_store`) -> decoded in overlapping blended
blocks -> point-guided instances over the region (:mod:`.region_instances`) -> written:

- ``DIR/<stem>.synthetic.tif``: tiled pyramidal TIFF (JPEG), the model's mpp in its resolution
  tags, an ImageDescription that marks it synthetic (:func:`wsi_cosynth.slide.writer.synthetic_description`);
- ``DIR/<stem>.synthetic.geojson``: QuPath detections, one Polygon per nucleus with its class, in
  the synthetic slide's level-0 pixels;
- ``DIR/<stem>.synthetic-labels.tif``: the semantic label (channel 0) and the instance ids
  (channel 1) as a 2-channel uint32 pyramid (deflate) of the same size.

Memory: one chunk's canvas state and its window batch, whatever the region's size; the region's
maps live in memory-mapped files (about 11 bytes per pixel on disk while running, for a model with
a 4-channel latent at 1/4 size). A killed run
resumes at the chunk it was in (rerun the same command).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path, output_lock
from ..errors import CosynthError
from ..layouts.rasterize import rasterize_points
from ..models.denoiser import unknown_class_id
from ..records import UNCLASSIFIED
from ..slide.writer import synthetic_description, write_pyramid_tiff
from .region_fusion import Known, decode_image, sample_canvas
from .region_instances import separate_region_instances
from .region_plan import RegionPlan, plan_region
from .region_store import RegionStore
from .synthetic import model_info
from .window_plan import Chunk, WindowPlan, plan_chunks
from .worker import cached_model, large_blocks_returned, release_free_heap, resolve_device

# px of one autoencoder decode in the decode pass: its full-resolution activations (~32 floats a
# pixel) are the largest allocation of a run, so this bounds the peak memory with the chunk.
DECODE_BLOCK = 512
DECODE_RAMP = 64  # px over which a decoded block fades into the blocks before it
INSTANCE_BLOCK = 512  # px of one watershed block (plus its halo) in the instance pass


@dataclass(frozen=True)
class RegionOptions:
    """How a region is sampled (sampling settings left None are the model's own).

    scheme, overlap, weights : the window plan (:class:`WindowPlan`); ``overlap`` None: 0 for
        ``wrap`` and ``shift`` (the moving grid hides the borders; ``wrap`` costs exactly the
        windows of independent tiles), 1/8 of the model's tile for ``overlap``.
    chunk : side in px of the cores of the pieces a large region is sampled in (the memory bound);
        None: 8 tiles less the margin, so that a chunk's canvas (core + margin) is 8 windows a side.
    margin : px of earlier chunks each chunk sees and continues; None: half a tile.
    batch_size : windows per network batch.
    """

    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    eta: float | None = None
    spacing: str | None = None
    guidance_interval: tuple[float, float] | None = None
    scheme: str = "wrap"
    overlap: int | None = None
    weights: str = "cosine"
    chunk: int | None = None
    margin: int | None = None
    batch_size: int = 8
    seed: int = 0


@dataclass(frozen=True)
class RegionResult:
    """What :func:`synthesize_region` wrote and what it cost."""

    slide: Path
    geojson: Path
    labels: Path
    size_hw: tuple[int, int]
    region_level0: tuple[int, int, int, int]
    mpp: float
    n_points: int
    n_nuclei: int
    n_chunks: int
    n_windows: int
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    # (y, x) canvas corners of the windows of each chunk's last step (chunks sampled by this call)
    last_windows: tuple[tuple[int, int], ...] = ()


def output_paths(out_dir: Path, stem: str) -> tuple[Path, Path, Path]:
    """(slide, geojson, labels) paths of a region's outputs."""
    return (out_dir / f"{stem}.synthetic.tif", out_dir / f"{stem}.synthetic.geojson",
            out_dir / f"{stem}.synthetic-labels.tif")


def _known(store: RegionStore, chunk: Chunk, factor: int, device: torch.device) -> Known | None:
    """The clean values earlier chunks fixed on this chunk's canvas (all of it but the core)."""
    y0, y1, x0, x1 = chunk.canvas
    cy0, _, cx0, _ = chunk.core
    if (y0, x0) == (cy0, cx0):
        return None
    mask = np.ones((y1 - y0, x1 - x0), dtype=bool)
    mask[cy0 - y0:, cx0 - x0:] = False
    image = torch.as_tensor(np.array(store.latent[:, y0 // factor:y1 // factor, x0 // factor:x1 // factor]))[None]
    distance = torch.as_tensor(np.asarray(store.distance[y0:y1, x0:x1], dtype=np.float32))[None, None]
    label = torch.as_tensor(np.asarray(store.label[y0:y1, x0:x1], dtype=np.int64))[None]
    return Known(image.to(device), distance.to(device), label.to(device), mask)


def _chunk_points(plan: RegionPlan, chunk: Chunk, n_classes: int) -> np.ndarray:
    """(H, W) int64 point map of a chunk's canvas (nuclei of unknown class as K + 1, as the model's)."""
    y0, y1, x0, x1 = chunk.canvas
    inside = (plan.xy[:, 0] >= x0) & (plan.xy[:, 0] < x1) & (plan.xy[:, 1] >= y0) & (plan.xy[:, 1] < y1)
    classes = np.where(plan.classes[inside] == UNCLASSIFIED, unknown_class_id(n_classes), plan.classes[inside])
    return rasterize_points(plan.xy[inside] - [x0, y0], classes, (y1 - y0, x1 - x0))


def _sample_chunks(model, plan: RegionPlan, store: RegionStore, chunks: list[Chunk], window_plan: WindowPlan,
                   settings, options: RegionOptions, bar) -> tuple[int, list[tuple[int, int]]]:
    """Sample every unfinished chunk into ``store``; the number of network windows evaluated and
    the region-canvas corners of each chunk's last-step windows."""
    factor = plan.canvas_hw[0] // store.latent.shape[1]
    n_windows = 0
    last: list[tuple[int, int]] = []
    for chunk in chunks:
        if store.is_done(chunk.index):
            continue
        y0, y1, x0, x1 = chunk.canvas
        sample = sample_canvas(model, _chunk_points(plan, chunk, model.taxonomy.n_classes), plan.tissue, window_plan, settings,
                               seed=(options.seed, chunk.index), known=_known(store, chunk, factor, model.device),
                               batch_size=options.batch_size)
        n_windows += sample.n_windows
        last += [(y0 + y, x0 + x) for y, x in sample.last_starts]
        state = sample.state
        cy0, cy1, cx0, cx1 = chunk.core
        ry0, ry1, rx0, rx1 = cy0 - y0, cy1 - y0, cx0 - x0, cx1 - x0
        store.latent[:, cy0 // factor:cy1 // factor, cx0 // factor:cx1 // factor] = \
            state.image[0, :, ry0 // factor:ry1 // factor, rx0 // factor:rx1 // factor].float().cpu().numpy()
        store.distance[cy0:cy1, cx0:cx1] = state.distance[0, 0, ry0:ry1, rx0:rx1].float().clamp(-1, 1).cpu().numpy()
        store.label[cy0:cy1, cx0:cx1] = state.label[0, ry0:ry1, rx0:rx1].cpu().numpy().astype(np.uint8)
        store.mark_done(chunk.index)
        del sample, state
        store.release_pages()
        release_free_heap()
        bar.update(1)
    return n_windows, last


def _ramp(n: int, length: int) -> np.ndarray:
    """(n,) weights rising linearly from ~0 to 1 over the first ``length`` entries, then 1."""
    r = np.ones(n, dtype=np.float32)
    k = min(n, length)
    r[:k] = (np.arange(k, dtype=np.float32) + 0.5) / max(k, 1)
    return r


def even_blocks(length: int, max_block: int, overlap: int, cell: int) -> tuple[int, list[int]]:
    """(size, starts) of the fewest equal blocks of at most ``max_block`` px (multiples of ``cell``)
    that cover [0, ``length``) with neighbours overlapping by at least ``overlap`` px.

    Equal blocks spread evenly instead of full-size blocks with the last one pushed inside: at a
    1000-px region, 512-px blocks every 448 px decoded 2.4x the region's pixels, three 376-px
    blocks a side 1.3x.
    """
    if length <= max_block:
        return length, [0]
    n = math.ceil((length - overlap) / (max_block - overlap))
    size = min(max_block, math.ceil((length + (n - 1) * overlap) / n / cell) * cell)
    starts = sorted({round(i * (length - size) / (n - 1) / cell) * cell for i in range(n - 1)} | {length - size})
    return size, starts


def _decode_region(model, plan: RegionPlan, store: RegionStore) -> None:
    """Decode the region's image in overlapping blocks; each block fades into those decoded before it."""
    h, w = plan.canvas_hw
    factor = h // store.latent.shape[1]
    bh, ys = even_blocks(h, DECODE_BLOCK, DECODE_RAMP, factor)
    bw, xs = even_blocks(w, DECODE_BLOCK, DECODE_RAMP, factor)
    for y in ys:
        for x in xs:
            y1, x1 = y + bh, x + bw
            latent = torch.as_tensor(np.array(store.latent[:, y // factor:y1 // factor, x // factor:x1 // factor]))[None]
            rgb = decode_image(model, latent.to(model.device)).astype(np.float32)
            ry = _ramp(y1 - y, DECODE_RAMP) if y > 0 else np.ones(y1 - y, np.float32)
            rx = _ramp(x1 - x, DECODE_RAMP) if x > 0 else np.ones(x1 - x, np.float32)
            weight = (ry[:, None] * rx[None, :])[:, :, None]
            old = np.asarray(store.image[y:y1, x:x1], dtype=np.float32)
            store.image[y:y1, x:x1] = np.clip(np.round(weight * rgb + (1 - weight) * old), 0, 255).astype(np.uint8)
            del latent, rgb, old
            store.release_pages()
            release_free_heap()  # each block's ~100 MiB of decoder activations, not a growing heap
    store.image.flush()


def _params(plan: RegionPlan, digest: str, settings, options: RegionOptions, device_kind: str) -> dict:
    points = hashlib.sha256(plan.xy.round(3).tobytes() + plan.classes.tobytes()).hexdigest()[:16]
    return {"model": digest, "source": plan.source, "region": list(plan.region_level0), "canvas": list(plan.canvas_hw),
            "points": points, "tissue": plan.tissue, "steps": settings.steps, "guidance": settings.guidance,
            "sampler": settings.sampler, "eta": settings.eta, "spacing": settings.spacing,
            "guidance_interval": list(settings.guidance_interval), "scheme": options.scheme, "overlap": options.overlap,
            "weights": options.weights, "chunk": options.chunk, "margin": options.margin, "seed": options.seed,
            "batch_size": options.batch_size, "device": device_kind}


def synthesize_region(
    slide: str | Path,
    out: str | Path,
    *,
    annotations: str | Path | None = None,
    region: tuple[int, int, int, int] | None = None,
    tissue: str | None = None,
    slide_mpp: float | None = None,
    model: str | Path | None = None,
    class_map: dict[str, str] | None = None,
    default_class: str | None = None,
    layouts: str = "auto",
    layout_model: str | Path | None = None,
    options: RegionOptions = RegionOptions(),
    device: str = "auto",
    threads: int | None = None,
    overwrite: bool = False,
    restart: bool = False,
    progress: bool = False,
) -> RegionResult:
    """Co-synthesise a region of ``slide`` (level-0 ``region`` (x, y, w, h), default its tissue's
    bounding box) from its annotated nuclei (or, ``layouts`` "resample" or "auto" on a slide without
    annotations, points drawn from a layout model over its tissue) and write it as a synthetic
    slide into ``out``.

    See the module docstring for the files. The output slide has the model's mpp (the source's
    when the source is at the model's resolution). Returns a :class:`RegionResult`.

    Raises
    ------
    CosynthError
        Any input problem (see :func:`plan_region`), existing outputs without ``overwrite``, a
        resume with other settings without ``restart``.
    """
    from tqdm import tqdm

    start = time.perf_counter()
    info = model_info(model)
    settings = info.sample.with_overrides(steps=options.steps, guidance=options.guidance, sampler=options.sampler,
                                          eta=options.eta, spacing=options.spacing,
                                          guidance_interval=options.guidance_interval)
    if not 1 <= settings.steps <= info.num_steps:
        raise CosynthError(f"--steps must be between 1 and the model's {info.num_steps} diffusion steps, got {settings.steps}")
    if info.mpp is None:
        raise CosynthError(f"model {info.path} records no mpp; region synthesis needs the model's resolution")
    if options.batch_size < 1:
        raise CosynthError(f"--batch-size must be >= 1, got {options.batch_size}")
    device = resolve_device(device)
    if threads:
        torch.set_num_threads(int(threads))
    net = cached_model(str(info.path), device, info.digest)
    cell = int(net.config.model.unshuffle)  # window and chunk corners fall on the latent / unshuffle grid
    window = info.tile_size
    default_overlap = 0 if options.scheme in ("wrap", "shift") else window // 8 // cell * cell
    margin = window // 2 // cell * cell if options.margin is None else options.margin
    options = replace(options, overlap=default_overlap if options.overlap is None else options.overlap,
                      chunk=8 * window - margin if options.chunk is None else options.chunk, margin=margin)
    try:
        window_plan = WindowPlan(window=window, cell=cell, scheme=options.scheme, overlap=options.overlap,  # type: ignore[arg-type]
                                 weights=options.weights)  # type: ignore[arg-type]
    except ValueError as exc:
        raise CosynthError(f"window plan: {exc}") from None
    if options.chunk < window or options.chunk % cell or options.margin % cell or options.margin < 0:
        raise CosynthError(f"--chunk must be >= the model's tile ({window} px); --chunk and --margin multiples of {cell} px "
                           f"(got {options.chunk}, {options.margin})")
    plan = plan_region(slide, taxonomy=info.taxonomy, model_mpp=float(info.mpp), window=window, cell=cell,
                       annotations=annotations, region=region, slide_mpp=slide_mpp, tissue=tissue,
                       class_map=class_map, default_class=default_class, unknown_class=net.supports_unknown_class,
                       layouts=layouts, layout_model=layout_model, seed=options.seed)
    out_dir = Path(out)
    paths = output_paths(out_dir, plan.stem)
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise CosynthError(f"output {existing[0]} exists (choose another --out or pass --overwrite)")
    with output_lock(paths[0]):
        ae = net.autoencoder
        factor = ae.factor if ae is not None else 1
        channels = ae.latent_channels if ae is not None else 3
        chunks = plan_chunks(plan.canvas_hw, chunk=options.chunk, margin=options.margin, window=window, cell=cell)
        store = RegionStore(out_dir / f".{plan.stem}.synthetic.work",
                            _params(plan, info.digest, settings, options, "cuda" if device.startswith("cuda") else "cpu"),
                            shape_hw=plan.canvas_hw, image_channels=channels, image_factor=factor, restart=restart)
        h, w = plan.size_hw
        blocks = -(-h // INSTANCE_BLOCK) * -(-w // INSTANCE_BLOCK)
        bar = tqdm(total=len(chunks) + blocks, initial=sum(store.is_done(c.index) for c in chunks), disable=not progress,
                   desc=f"synthesize {plan.stem}", unit="step", dynamic_ncols=True)
        try:
            try:
                n_windows, last_windows = _sample_chunks(net, plan, store, chunks, window_plan, settings, options, bar)
            except BaseException:
                if not store.done:
                    store.remove()  # nothing to resume from: leave no trace
                raise
            with large_blocks_returned():
                _decode_region(net, plan, store)
            meta = {"source": plan.source, "region_level0": list(plan.region_level0), "source_mpp": plan.slide_mpp,
                    "mpp": plan.mpp, "model": info.digest, "tissue": plan.tissue, "seed": options.seed,
                    "sampler": settings.sampler, "steps": settings.steps, "scheme": options.scheme}
            with atomic_path(paths[1]) as tmp, open(tmp, "w") as fh, large_blocks_returned():
                nuclei = separate_region_instances(store, plan, info.taxonomy, fh, block=INSTANCE_BLOCK,
                                                   on_block=lambda: bar.update(1))
            store.close()  # the writers read the maps through MapReader, a fresh mapping per read
            write_pyramid_tiff(paths[0], store.reader("image", rows=h, cols=w), mpp=plan.mpp,
                               description=synthetic_description(meta))
            labels_meta = {**meta, "channels": ["semantic", "instance"], "classes": list(info.taxonomy.names)}
            write_pyramid_tiff(paths[2], store.reader("label", "instances", rows=h, cols=w).astype(np.uint32), mpp=plan.mpp,
                               description=synthetic_description(labels_meta), compression="deflate", downsample="nearest")
        finally:
            bar.close()
        store.remove()
    notes = list(plan.notes)
    if abs(plan.mpp - plan.slide_mpp) > 1e-3 * plan.slide_mpp:
        notes.append(f"the synthetic slide has the model's {plan.mpp:g} um/px; the source has {plan.slide_mpp:g} um/px")
    return RegionResult(slide=paths[0], geojson=paths[1], labels=paths[2], size_hw=plan.size_hw,
                        region_level0=plan.region_level0, mpp=plan.mpp, n_points=len(plan.classes),
                        n_nuclei=nuclei.n_nuclei, n_chunks=len(chunks), n_windows=n_windows,
                        seconds=time.perf_counter() - start, notes=tuple(notes), last_windows=tuple(last_windows))
