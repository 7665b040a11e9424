"""Aperio ImageScope XML annotations (MoNuSAC and MoNuSeg style), in level-0 pixels.

Layout: ``Annotations/Annotation/Regions/Region/Vertices/Vertex@X,@Y``. The class of an
Annotation's regions is the ``Name`` of its first ``Attributes/Attribute`` (MoNuSAC: Epithelial,
Lymphocyte, Macrophage, Neutrophil), else the Annotation's ``Name`` attribute, else "nucleus"
(MoNuSeg has no classes). Region types: 0 free-hand polygon, 1 rectangle (polygons from their
vertices), 2 ellipse (two corner vertices); a one-vertex region is a point; others are skipped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from shapely import affinity
from shapely.geometry import Point, Polygon

from ..errors import CosynthError, require_file
from .table import AnnotationTable, make_table

DEFAULT_CLASS = "nucleus"


def _annotation_class(annotation: ET.Element) -> str:
    for attr in annotation.findall("./Attributes/Attribute"):
        name = (attr.get("Name") or "").strip()
        if name:
            return name
    name = (annotation.get("Name") or "").strip()
    return name or DEFAULT_CLASS


def _region_geometry(region: ET.Element, path: Path):
    try:
        xy = np.array([(float(v.get("X")), float(v.get("Y"))) for v in region.findall("./Vertices/Vertex")])
    except (TypeError, ValueError):
        raise CosynthError(f"annotations {path}: region {region.get('Id')} has a vertex without numeric X/Y") from None
    kind = region.get("Type", "0")
    if len(xy) == 1:
        return Point(xy[0])
    if kind == "2" and len(xy) >= 2:
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        circle = Point((x0 + x1) / 2, (y0 + y1) / 2).buffer(1.0, 32)
        return affinity.scale(circle, (x1 - x0) / 2, (y1 - y0) / 2)
    if len(xy) >= 3:
        return Polygon(xy)
    return None


def read_aperio_xml(path: str | Path) -> AnnotationTable:
    """Nuclei polygons and classes from an ImageScope XML file."""
    p = require_file(path, "annotations")
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as exc:
        raise CosynthError(f"annotations {p} are not valid XML: {exc}") from None
    if root.tag != "Annotations":
        raise CosynthError(f"annotations {p}: expected an Aperio <Annotations> root element, found <{root.tag}>")
    nuclei: list = []
    classes: list[str] = []
    for annotation in root.findall("./Annotation"):
        name = _annotation_class(annotation)
        for region in annotation.findall("./Regions/Region"):
            nuclei.append(_region_geometry(region, p))
            classes.append(name)
    return make_table(nuclei, classes, source=p)
