"""Aperio ImageScope XML annotations (MoNuSAC and MoNuSeg style), in level-0 pixels.

Layout: ``Annotations/Annotation/Regions/Region/Vertices/Vertex@X,@Y``. Each Annotation (an
ImageScope layer) gives all its regions one class, the first of:

1. the ``Name`` of its first ``Attributes/Attribute`` that is not one of ImageScope's generic
   attributes (MoNuSAC: Epithelial, Lymphocyte, Macrophage, Neutrophil, each with ``Value=""``);
2. the Annotation's own ``Name``, unless empty or ImageScope's placeholder "Layer N";
3. the non-empty ``Value`` of a generic attribute (a layer whose Description says "tumor");
4. "nucleus": unclassified (MoNuSeg, whose layers carry only an empty Description).

Region types: 0 free-hand polygon, 1 rectangle (polygons from their vertices), 2 ellipse (two
corner vertices); a one-vertex region is a point; others are skipped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from shapely import affinity
from shapely.geometry import Point, Polygon

from ..errors import CosynthError, require_file
from .table import AnnotationTable, make_table

DEFAULT_CLASS = "nucleus"

# Attribute names ImageScope writes by itself, which name a column of its attribute tables, never a
# class: every new layer gets ``<Attribute Name="Description" Id="0" Value=""/>`` (its one
# user-editable column), and the region table's built-in columns are Region, Length, Area and Text
# (``RegionAttributeHeaders`` ids 9999, 9997, 9996, 9998). Compared in lower case.
GENERIC_ATTRIBUTES = frozenset({"description", "region", "length", "area", "text"})

# The name ImageScope shows for a layer nobody named ("Layer 2" in MoNuSAC's A9K0_2.xml).
_PLACEHOLDER_LAYER_NAME = re.compile(r"layer\s*\d*", re.IGNORECASE)


def _annotation_class(annotation: ET.Element) -> str:
    """Class name of one ``<Annotation>`` layer's regions (rules in the module docstring)."""
    attributes = [
        ((attr.get("Name") or "").strip(), (attr.get("Value") or "").strip())
        for attr in annotation.findall("./Attributes/Attribute")
    ]
    for name, _ in attributes:
        if name and name.lower() not in GENERIC_ATTRIBUTES:
            return name
    layer_name = (annotation.get("Name") or "").strip()
    if layer_name and not _PLACEHOLDER_LAYER_NAME.fullmatch(layer_name):
        return layer_name
    # A generic attribute's Value is what the annotator typed into that column: keep it as the class
    # rather than drop it; free text then fails loudly as an unknown class, never silently.
    for name, value in attributes:
        if value and name.lower() in GENERIC_ATTRIBUTES:
            return value
    return DEFAULT_CLASS


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
