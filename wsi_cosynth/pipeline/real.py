"""Real-data export: slide -> tissue mask -> tile grid -> per-tile labels -> dataset writer.

Streaming: tiles are read one at a time and handed straight to the writer, so memory depends on
the tile size and the annotation table, not on the slide's area. The planning it shares with the
synthetic pipeline (:func:`plan_slide`, :func:`iter_slide_tiles`) is in :mod:`.planning`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..annotations import AnnotationTable
from ..annotations.labels import require_outlines
from ..atomic import output_lock
from ..errors import CosynthError
from ..slide import TissueParams
from ..taxonomy import Taxonomy, get_taxonomy, with_default_class
from .detected import detect_for_export, detections_path
from .planning import (  # noqa: F401  (re-exported: the planning names used to live here)
    DEFAULT_TAXONOMY,
    SlidePlan,
    SlideTile,
    TileNuclei,
    TilePosition,
    class_lookup,
    infer_taxonomy,
    iter_slide_tiles,
    labelled_tile,
    plan_slide,
    safe_stem,
    tile_layout,
)


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote."""

    out: Path
    fmt: str
    n_tiles: int
    n_nuclei: int
    taxonomy: str
    warnings: tuple[str, ...]


def export_real(
    slide: str | Path,
    annotations: str | Path | AnnotationTable | None,
    out: str | Path,
    fmt: str,
    *,
    taxonomy: Taxonomy | str | None = None,
    class_map: dict[str, str] | None = None,
    mpp: float = 0.5,
    tile_size: int = 256,
    stride: int | None = None,
    min_tissue: float = 0.5,
    slide_mpp: float | None = None,
    tissue: str | None = None,
    tissue_regions: str | Path | None = None,
    tissue_params: TissueParams = TissueParams(),
    sidecar: bool = True,
    progress: bool = False,
    writer_options: dict[str, Any] | None = None,
    pad: tuple[int, int, int] | None = None,
    default_class: str | None = None,
    labels: str = "annotations",
    detector: str | Path = "bundled",
) -> ExportSummary:
    """Export the real tiles of an annotated slide as a dataset in ``fmt`` (coco, lizard, pannuke, geojson).

    Tiles are streamed: read, labelled and written one at a time. The output directory appears
    only when complete. GeoJSON output is in level-0 slide pixels (tiles carry a SlidePlacement).
    Annotations without classes get the one-class ``nucleus`` taxonomy unless ``taxonomy`` is given;
    ``default_class`` names the class unclassified nuclei take in a given taxonomy. ``pad``: see
    :func:`plan_slide`. ``labels="detect"``: the labels are the nuclei ``detector`` finds on the
    slide (:mod:`.detected`; written beside ``out``), and every tile and the dataset's metadata
    name the detector (``labels_by``): model-made labels, not a pathologist's.

    Raises
    ------
    CosynthError
        Any input problem (see :func:`plan_slide`), an unmapped class, point-only annotations.
    """
    from ..exporters import WRITE_FORMATS, open_writer

    if str(fmt).lower() not in WRITE_FORMATS:
        raise CosynthError(f"unknown export format {fmt!r} (valid: {', '.join(WRITE_FORMATS)})")
    detected_note = None
    if labels == "detect":
        if annotations is not None:
            raise CosynthError("--labels detect labels the tiles with the nuclei detector: drop --annotations "
                               "(or drop --labels detect to use them)")
        detected = detect_for_export(slide, detections_path(out), detector, slide_mpp=slide_mpp, min_tissue=min_tissue,
                                     progress=progress)
        annotations, sidecar, detected_note = detected.path, False, detected.note
        writer_options = {**(writer_options or {}), "labels_by": detected.labels_by}
    elif labels != "annotations":
        raise CosynthError(f"unknown --labels {labels!r} (valid: annotations, detect)")
    # One export per output at a time (see atomic.output_lock).
    with output_lock(out), plan_slide(slide, annotations, mpp=mpp, tile_size=tile_size, stride=stride,
                                      min_tissue=min_tissue, slide_mpp=slide_mpp, tissue=tissue,
                                      tissue_regions=tissue_regions, tissue_params=tissue_params, sidecar=sidecar,
                                      pad=pad) as plan:
        table = plan.annotations
        if table is not None:
            require_outlines(table)
        tax = taxonomy if isinstance(taxonomy, Taxonomy) else (get_taxonomy(taxonomy) if taxonomy else infer_taxonomy(table, fmt))
        lookup = class_lookup(table, tax, with_default_class(class_map, default_class))
        n_nuclei = 0
        bar = _progress(len(plan.grid), progress, f"export {plan.stem}")
        try:
            writer = open_writer(fmt, out, tax, **(writer_options or {}))
            with writer:
                for tile in iter_slide_tiles(plan):
                    labelled = labelled_tile(plan, tile, tax, lookup)
                    writer.add(labelled)
                    n_nuclei += labelled.n_nuclei
                    bar.update(1)
        finally:
            bar.close()
        notes = [*([detected_note] if detected_note else []), *plan.warnings, *writer.notes]
        repairs = getattr(table, "repairs", ()) if table is not None else ()
        if repairs:
            from ..annotations.repairs import REPORT_NAME, write_repair_report

            report = write_repair_report(Path(out) / REPORT_NAME, repairs)
            notes.append(f"{len(repairs)} nucleus outlines were invalid and repaired with make_valid: their "
                         f"positions in the annotation file, centroids and areas before/after are in {report}")
        return ExportSummary(out=Path(out), fmt=str(fmt).lower(), n_tiles=len(plan.grid), n_nuclei=n_nuclei,
                             taxonomy=writer.taxonomy.key, warnings=tuple(notes))


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="tile", dynamic_ncols=True)
