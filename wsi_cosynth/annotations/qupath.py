"""QuPath GeoJSON at slide level (docs/FORMATS.md section 4), in level-0 pixels.

Parsing (every container, object-type spelling, classification form, ``nucleusGeometry`` of
cells, childObjects) is :func:`wsi_cosynth.exporters.geojson.read_geojson_nuclei`, shared with
the GeoJSON dataset reader. This module decides what each object IS on a slide:

- detections and cells are nuclei; ``tile``, ``root`` and TMA-core objects are ignored;
- annotations whose geometry is a Point (a MultiPoint arrives as one Point per point) are
  nuclei: CellViT writes one MultiPoint/MultiPolygon annotation per class;
- other annotations are nuclei when the file has no detections or cells (each part of a
  MultiPolygon is one nucleus), otherwise tissue regions named by their class ("Tumor",
  "Stroma"). ``role`` forces polygon annotations to one side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from shapely.geometry import MultiPolygon

from ..errors import CosynthError, require_file
from .table import AnnotationTable, make_table

Role = Literal["auto", "nuclei", "regions"]
_IGNORED = {"tile", "root", "tmacore"}


def read_qupath_geojson(path: str | Path, *, role: Role = "auto") -> AnnotationTable:
    """Nuclei and tissue regions from a QuPath GeoJSON file.

    Parameters
    ----------
    path : .geojson / .json file (FeatureCollection, array of Features, Feature or Geometry).
    role : what polygon annotations are: "auto" (see module docstring), "nuclei" or "regions".

    Returns
    -------
    AnnotationTable in the file's (level-0) pixel coordinates.
    """
    from ..exporters.geojson import read_geojson_nuclei

    p = require_file(path, "annotations")
    if role not in ("auto", "nuclei", "regions"):
        raise CosynthError(f"annotation role must be auto, nuclei or regions, got {role!r}")
    objects = read_geojson_nuclei(p)
    kinds = [str(t).lower() for t in objects.object_types]
    has_detections = any(k in ("detection", "cell") for k in kinds)
    annotations_are_nuclei = role == "nuclei" or (role == "auto" and not has_detections)
    nuclei: list = []
    classes: list[str] = []
    regions: list = []
    region_names: list[str] = []
    for geom, name, kind in zip(objects.geometries, objects.class_names, kinds):
        if kind in _IGNORED:
            continue
        if kind in ("detection", "cell") or geom.geom_type == "Point":
            nuclei.append(geom)
            classes.append(name)
        elif annotations_are_nuclei:
            parts = list(geom.geoms) if isinstance(geom, MultiPolygon) else [geom]
            nuclei.extend(parts)
            classes.extend([name] * len(parts))
        else:
            regions.append(geom)
            region_names.append(name)
    return make_table(nuclei, classes, regions=regions, region_names=region_names, source=p)
