"""Slide planning shared by real export, synthetic export, tiling and training.

:func:`plan_slide` opens a slide, loads its annotations, detects tissue and lays the tile grid;
:func:`iter_slide_tiles` then reads the plan's tiles one at a time (position, image, nuclei).
:func:`class_lookup` / :func:`infer_taxonomy` decide the class ids of the annotations' names.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..annotations import AnnotationTable, find_sidecar, load_annotations
from ..annotations.labels import tile_instances, tile_outlines, tile_points
from ..errors import CosynthError
from ..parallel import ordered_map, read_workers
from ..records import LabelledTile, Layout, Provenance, SlidePlacement
from ..slide import SlideReader, TileGrid, TissueMask, TissueParams, detect_tissue, tile_grid
from ..slide.tissue import default_mask_mpp
from ..taxonomy import BUILTIN, Taxonomy, get_taxonomy, is_unclassified, normalise_name
from ..validation import raise_if_strict

DEFAULT_TAXONOMY = "lizard"
# LabelledTile.extra key of the source outlines of instance ids 1..N ((N,) shapely geometries in
# tile pixels, clipped to the tile); see annotations.labels.tile_outlines.
OUTLINES_KEY = "outlines_tile"


@dataclass(frozen=True)
class TilePosition:
    """Where one tile lies: level-0 top-left (x, y), grid indices, tissue fraction and type."""

    index: int
    name: str
    x_level0: int
    y_level0: int
    col: int
    row: int
    tissue_fraction: float
    tissue: str | None
    scale: float
    tile_size: int

    @property
    def box_level0(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in level-0 pixels."""
        e = self.tile_size * self.scale
        return (float(self.x_level0), float(self.y_level0), self.x_level0 + e, self.y_level0 + e)

    @property
    def placement(self) -> SlidePlacement:
        return SlidePlacement(x0=float(self.x_level0), y0=float(self.y_level0), scale=self.scale)


@dataclass(frozen=True)
class TileNuclei:
    """The annotated nuclei touching one tile.

    ``indices``: (K,) table indices of nuclei intersecting the tile; ``xy_tile``/``classes``:
    centroids (tile pixels) and class names of those whose centroid lies inside the tile.
    """

    indices: np.ndarray
    xy_tile: np.ndarray
    point_indices: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class SlideTile:
    """One tile as read: position, (H, W, 3) uint8 RGB image at the target mpp, nuclei."""

    position: TilePosition
    image: np.ndarray
    nuclei: TileNuclei


@dataclass
class SlidePlan:
    """Everything decided before any tile is read."""

    reader: SlideReader
    grid: TileGrid
    tissue_mask: TissueMask
    annotations: AnnotationTable | None
    target_mpp: float
    default_tissue: str | None
    stem: str
    warnings: list[str] = field(default_factory=list)
    pad_color: tuple[int, int, int] | None = None

    def positions(self) -> Iterator[TilePosition]:
        g = self.grid
        for i in range(len(g)):
            x, y = int(g.x_level0[i]), int(g.y_level0[i])
            pos = TilePosition(
                index=i, name=f"{self.stem}_x{x}_y{y}", x_level0=x, y_level0=y, col=int(g.col[i]), row=int(g.row[i]),
                tissue_fraction=float(g.tissue_fraction[i]), tissue=None, scale=g.scale, tile_size=g.tile_size,
            )
            yield replace(pos, tissue=self._tissue_of(pos))

    def _tissue_of(self, pos: TilePosition) -> str | None:
        if self.annotations is not None and len(self.annotations.regions):
            found = self.annotations.tissue_at(pos.box_level0)
            if found is not None:
                return found
        return self.default_tissue

    def nuclei_of(self, pos: TilePosition) -> TileNuclei:
        size = (pos.tile_size, pos.tile_size)
        if self.annotations is None or not len(self.annotations):
            empty = np.zeros(0, dtype=np.int64)
            return TileNuclei(empty, np.zeros((0, 2)), empty, np.zeros(0, dtype=object))
        idx = self.annotations.query_nuclei(pos.box_level0)
        xy, kept = tile_points(self.annotations, idx, (pos.x_level0, pos.y_level0), pos.scale, size)
        return TileNuclei(idx, xy, kept, self.annotations.classes[kept])

    def read_tile(self, pos: TilePosition) -> np.ndarray:
        """(T, T, 3) uint8 RGB of a tile at the target mpp; outside the slide in ``pad_color``."""
        size = (pos.tile_size, pos.tile_size)
        image = self.reader.read_region((pos.x_level0, pos.y_level0), size, self.target_mpp)
        if self.pad_color is not None:
            w0, h0 = self.reader.dimensions
            # Output pixels whose centre lies outside the slide take the background colour.
            cols = int(np.clip(np.ceil((w0 - pos.x_level0) / pos.scale - 0.5), 0, pos.tile_size))
            rows = int(np.clip(np.ceil((h0 - pos.y_level0) / pos.scale - 0.5), 0, pos.tile_size))
            if cols < pos.tile_size or rows < pos.tile_size:
                image = image.copy()
                image[:, cols:] = self.pad_color
                image[rows:, :] = self.pad_color
        return image

    def provenance(self, pos: TilePosition) -> Provenance:
        from ..slide.writer import is_synthetic_description

        # A slide written by `wsi-cosynth synthesize` says so in its description: its tiles stay marked.
        synthetic = is_synthetic_description(self.reader.properties.get("tiff.ImageDescription"))
        return Provenance(name=pos.name, source=str(self.reader.path), x_slide=float(pos.x_level0),
                          y_slide=float(pos.y_level0), mpp=self.target_mpp, tissue=pos.tissue, synthetic=synthetic)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> "SlidePlan":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def safe_stem(path: str | Path) -> str:
    """A file-name stem with only [A-Za-z0-9_] (no '-': CoNIC-style names split on it)."""
    stem = re.sub(r"[^A-Za-z0-9_]+", "_", Path(path).name.split(".")[0]).strip("_")
    return stem or "slide"


def _objective_power(reader: SlideReader) -> float | None:
    for key in ("openslide.objective-power", "aperio.AppMag"):
        try:
            return float(reader.properties[key])
        except (KeyError, ValueError):
            continue
    return None


def plan_slide(
    slide: str | Path,
    annotations: str | Path | AnnotationTable | None = None,
    *,
    mpp: float = 0.5,
    tile_size: int = 256,
    stride: int | None = None,
    min_tissue: float = 0.5,
    slide_mpp: float | None = None,
    tissue: str | None = None,
    tissue_regions: str | Path | None = None,
    tissue_params: TissueParams = TissueParams(),
    sidecar: bool = True,
    backend: str = "openslide",
    type_names: Any = None,
    pad: tuple[int, int, int] | None = None,
) -> SlidePlan:
    """Open a slide, load its annotations, detect tissue and lay the tile grid.

    Parameters
    ----------
    slide : the slide file.
    annotations : an annotation file or table; None looks for a sidecar (``x.geojson`` next to
        ``x.svs``) when ``sidecar`` is True.
    mpp, tile_size, stride, min_tissue : the grid (see :func:`~wsi_cosynth.slide.tile_grid`).
    slide_mpp : the slide's resolution when the file does not record it.
    tissue : tissue type of tiles not covered by a classified tissue region.
    tissue_regions : an extra file of tissue-region polygons (e.g. a GeoParquet tissue table).
    pad : an RGB background colour: the grid then also covers the slide's right and bottom edges
        (and a slide smaller than one tile), and tile pixels outside the slide take this colour.
        None keeps only tiles wholly inside the slide.

    Raises
    ------
    CosynthError
        Unreadable slide or annotations, no mpp, annotations outside the slide, no tissue.
    """
    reader = SlideReader(slide, slide_mpp=slide_mpp, backend=backend)  # type: ignore[arg-type]
    try:
        notes: list[str] = []
        table = _load_table(reader, annotations, sidecar, type_names, notes)
        if tissue_regions is not None:
            regions = load_annotations(tissue_regions, role="regions")
            table = regions if table is None else table.merged(regions)
        if table is not None:
            _check_inside(reader, table, notes)
        if pad is None:
            _check_fits_a_tile(reader, float(mpp), int(tile_size))
        scale_um = tile_size * float(mpp)
        mask_mpp = default_mask_mpp(reader.mpp, reader.dimensions, scale_um)
        tmask = detect_tissue(reader, mpp=mask_mpp, params=tissue_params)
        if min_tissue > 0 and not tmask.mask.any():
            raise CosynthError(
                f"no tissue found in slide {reader.path} (tissue threshold {tmask.threshold:.3f} on "
                f"{tissue_params.channel}); lower --min-tissue to 0 to tile it anyway"
            )
        grid = tile_grid(reader.dimensions, reader.mpp, target_mpp=mpp, tile_size=tile_size, stride=stride,
                         min_tissue=min_tissue, tissue_mask=tmask.mask, mask_scale=tmask.scale_to_level0,
                         pad=pad is not None)
        if len(grid) == 0:
            w, h = reader.dimensions
            raise CosynthError(
                f"no tile of slide {reader.path} ({w}x{h} px at {reader.mpp:g} um/px) has tissue fraction "
                f">= {min_tissue} at {tile_size} px x {mpp:g} um/px (tissue covers {100 * tmask.fraction:.1f}% of "
                f"the slide); use smaller tiles, a finer --mpp or a lower --min-tissue"
            )
        return SlidePlan(reader=reader, grid=grid, tissue_mask=tmask, annotations=table, target_mpp=float(mpp),
                         default_tissue=tissue, stem=safe_stem(reader.path), warnings=notes,
                         pad_color=None if pad is None else tuple(int(v) for v in pad))
    except BaseException:
        reader.close()
        raise


def _check_fits_a_tile(reader: SlideReader, mpp: float, tile_size: int) -> None:
    """CosynthError when the slide is narrower or shorter than one tile (the grid would be empty)."""
    w, h = reader.dimensions
    extent = tile_size * mpp / reader.mpp
    if w >= extent - 1e-6 and h >= extent - 1e-6:
        return
    fits = int(min(w, h) * reader.mpp / mpp)
    raise CosynthError(
        f"slide {reader.path} ({w}x{h} px at {reader.mpp:g} um/px) is smaller than one {tile_size} px tile at "
        f"{mpp:g} um/px ({extent:.0f}x{extent:.0f} level-0 px): pad it with --pad [COLOUR] (background colour, "
        f"default white), or choose --tile-size {max(fits, 1)} or less, or a finer --mpp"
    )


def _load_table(reader: SlideReader, annotations, sidecar: bool, type_names, notes: list[str]) -> AnnotationTable | None:
    if isinstance(annotations, AnnotationTable):
        return annotations
    path = Path(annotations) if annotations is not None else (find_sidecar(reader.path) if sidecar else None)
    if path is None:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = load_annotations(path, base_mag=_objective_power(reader), type_names=type_names)
    notes.extend(str(w.message) for w in caught)
    return table


def _check_inside(reader: SlideReader, table: AnnotationTable, notes: list[str]) -> None:
    if not len(table):
        return
    w, h = reader.dimensions
    c = table.centroids()
    outside = (c[:, 0] < 0) | (c[:, 0] >= w) | (c[:, 1] < 0) | (c[:, 1] >= h)
    if outside.all():
        b = table.bounds()
        raise CosynthError(
            f"annotations {table.source} lie outside slide {reader.path}: nuclei span x {b[0]:.0f}..{b[2]:.0f}, "
            f"y {b[1]:.0f}..{b[3]:.0f} but the slide is {w}x{h} level-0 pixels (wrong slide, or coordinates "
            f"not at level 0?)"
        )
    if outside.any():
        # The slide is the frame of slide-level annotations: out of it is out of bounds.
        raise_if_strict(f"annotations {table.source}", Counter({f"outside the {w}x{h} slide": int(outside.sum())}),
                        what="nucleus centroid")
        notes.append(f"annotations {table.source}: {int(outside.sum())} of {len(c)} nuclei lie outside the slide and are ignored")


def iter_slide_tiles(plan: SlidePlan, *, workers: int | None = None,
                     positions: Iterable[TilePosition] | None = None) -> Iterator[SlideTile]:
    """Read the plan's tiles in row-major order (or those of ``positions``), each with its nuclei.

    Pixels are read by a bounded pool of ``workers`` threads (default :func:`read_workers`;
    1 reads in the calling thread), at most ``2 * workers`` tiles ahead of the consumer, so memory
    stays a few tiles; OpenSlide and libjpeg release the GIL while decoding (other backends are
    read one thread at a time, see :class:`~wsi_cosynth.slide.SlideReader`). Tiles come out in
    grid order whatever the thread timing; nuclei are looked up in the calling thread.
    """
    n = read_workers() if workers is None else int(workers)
    if n < 1:
        raise CosynthError(f"workers must be a positive number of threads, got {workers!r}")

    wanted = plan.positions() if positions is None else positions
    for pos, image in ordered_map(plan.read_tile, wanted, workers=n, name="slide-read"):
        yield SlideTile(position=pos, image=image, nuclei=plan.nuclei_of(pos))


def class_lookup(table: AnnotationTable | None, taxonomy: Taxonomy, class_map: dict[str, str] | None, *,
                 unclassified: bool = False) -> dict[str, int]:
    """Class NAME -> id in ``taxonomy`` for every class in the table (unknown class: CosynthError).

    ``unclassified``: nuclei without a class that the map and the taxonomy do not place become
    :data:`~wsi_cosynth.records.UNCLASSIFIED` (for layouts of a model with an unknown class).
    """
    from ..records import UNCLASSIFIED
    from ..taxonomy import map_name

    if table is None:
        return {}
    lookup = {}
    for n in table.class_names():
        try:
            lookup[n] = map_name(n, taxonomy, class_map, where=f"annotations {table.source}")
        except CosynthError:
            if not is_unclassified(n):
                raise
            if unclassified:
                lookup[n] = UNCLASSIFIED
                continue
            raise CosynthError(
                f"annotations {table.source}: nuclei have no class ({n!r}) and taxonomy {taxonomy.key!r} has no "
                f"such class: give them one with --default-class NAME (one of {', '.join(taxonomy.names)})"
            ) from None
    return lookup


def infer_taxonomy(table: AnnotationTable | None, fmt: str | None = None) -> Taxonomy:
    """The smallest built-in class set holding every annotation class name.

    Without annotations: the format's own set (pannuke for PanNuke files), else lizard. Nuclei
    without classes ("nucleus", "unclassified", ...): the one-class ``nucleus`` set.
    """
    if table is None or not len(table):
        return get_taxonomy("pannuke" if str(fmt).lower() == "pannuke" else DEFAULT_TAXONOMY)
    return taxonomy_for_names(table.class_names(), f"annotations {table.source}")


def taxonomy_for_names(class_names: Iterable[str], where: str) -> Taxonomy:
    """The smallest built-in class set holding every name (see :func:`infer_taxonomy`); ``where``
    names the source in the error raised when none does."""
    given = sorted({str(n) for n in class_names})
    if all(is_unclassified(n) for n in given):
        return get_taxonomy("nucleus")
    names = {normalise_name(n) for n in given}
    fits = [t for t in BUILTIN.values() if names <= {normalise_name(n) for n in t.names}]
    if fits:
        return min(fits, key=lambda t: t.n_classes)
    raise CosynthError(
        f"{where} have classes {given}, which no built-in taxonomy "
        f"holds exactly; choose one with --taxonomy ({', '.join(BUILTIN)}) and map names with --class-map"
    )


def labelled_tile(plan: SlidePlan, tile: SlideTile, taxonomy: Taxonomy, lookup: dict[str, int]) -> LabelledTile:
    """The :class:`LabelledTile` of a read tile: instance map from the polygons, classes by name."""
    pos = tile.position
    size = (pos.tile_size, pos.tile_size)
    extra = {}
    if plan.annotations is not None and len(tile.nuclei.indices):
        origin = (pos.x_level0, pos.y_level0)
        inst, kept = tile_instances(plan.annotations, tile.nuclei.indices, origin, pos.scale, size)
        classes = np.array([lookup[str(c)] for c in plan.annotations.classes[kept]], dtype=np.int64)
        # The source outlines (clipped, tile pixels) for writers that store polygons (GeoJSON).
        extra[OUTLINES_KEY] = tile_outlines(plan.annotations, kept, origin, pos.scale, size)
    else:
        inst, classes = np.zeros(size, dtype=np.int32), np.zeros(0, dtype=np.int64)
    return LabelledTile(image=tile.image, instances=inst, classes=classes, taxonomy=taxonomy,
                        provenance=plan.provenance(pos), placement=pos.placement, extra=extra)


def tile_layout(plan: SlidePlan, tile: SlideTile, taxonomy: Taxonomy, lookup: dict[str, int]) -> Layout:
    """The nuclei of a tile as points (works for point-only annotations too)."""
    n = tile.nuclei
    classes = np.array([lookup[str(c)] for c in n.classes], dtype=np.int64)
    pos = tile.position
    return Layout(xy_tile=n.xy_tile, classes=classes, size=(pos.tile_size, pos.tile_size), taxonomy=taxonomy,
                  provenance=plan.provenance(pos), placement=pos.placement)
