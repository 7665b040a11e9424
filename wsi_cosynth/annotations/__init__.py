"""Read a slide's nuclei and tissue annotations into one table; per-tile queries and labels.

``load_annotations(path)`` picks the reader by content and suffix: QuPath GeoJSON
(.geojson/.json), HoVer-Net JSON (a .json with a "nuc" object), Aperio
ImageScope XML (.xml), GeoParquet (.parquet). ``find_sidecar(slide)`` finds ``x.geojson``
(then .json, .xml, .parquet) next to ``x.svs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CosynthError, require_file
from .table import AnnotationTable, AnnotationWarning, make_table

SIDECAR_SUFFIXES: tuple[str, ...] = (".geojson", ".json", ".xml", ".parquet")

__all__ = ["AnnotationTable", "AnnotationWarning", "SIDECAR_SUFFIXES", "find_sidecar", "load_annotations", "make_table"]


def find_sidecar(slide_path: str | Path) -> Path | None:
    """The annotation file next to a slide with the same stem, or None.

    A sidecar that exists but is not a regular file (a FIFO, a directory, a looping or dangling
    symbolic link) is an error: falling back to no annotations would change the output silently.
    """
    slide = Path(slide_path)
    for suffix in SIDECAR_SUFFIXES:
        candidate = slide.with_name(slide.stem + suffix)
        if candidate.is_symlink() or candidate.exists():
            return require_file(candidate, "annotations")
    return None


def load_annotations(
    path: str | Path, *, role: str = "auto", base_mag: float | None = None, type_names: Any = None,
) -> AnnotationTable:
    """Read one annotation file into an :class:`AnnotationTable` (level-0 pixels).

    Parameters
    ----------
    role : "auto", "nuclei" or "regions": what polygon annotations are (GeoJSON: see
        :mod:`.qupath`; GeoParquet: "regions" reads tissue regions, anything else nuclei).
    base_mag, type_names : HoVer-Net WSI JSON only (see :mod:`.hovernet_wsi`).
    """
    p = require_file(path, "annotations")
    name = p.name.lower()
    if name.endswith(".xml"):
        from .aperio_xml import read_aperio_xml
        from .table import make_table

        table = read_aperio_xml(p)
        if role == "regions":  # ImageScope regions drawn around tissue, named by their class
            return make_table([], [], regions=list(table.nuclei), region_names=list(table.classes), source=p)
        return table
    if name.endswith(".parquet"):
        from .geoparquet import read_geoparquet

        return read_geoparquet(p, role="regions" if role == "regions" else "nuclei")
    if name.endswith((".geojson", ".json")):
        from ..exporters._common import load_json
        from .hovernet_wsi import is_hovernet_json, read_hovernet_wsi
        from .qupath import read_qupath_geojson

        if name.endswith(".json"):
            data = load_json(p)
            if is_hovernet_json(data):
                if role == "regions":
                    raise CosynthError(f"annotations {p}: HoVer-Net JSON holds nuclei, not tissue regions")
                return read_hovernet_wsi(p, base_mag=base_mag, type_names=type_names, data=data)
        return read_qupath_geojson(p, role=role)  # type: ignore[arg-type]
    raise CosynthError(
        f"annotations {p}: unknown file type (expected .geojson, .json, .xml or .parquet)"
    )
