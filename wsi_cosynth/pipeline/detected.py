"""Layouts and labels for a slide nobody annotated: detect its nuclei first, then use them as annotations.

``export`` on a slide without annotations (no ``--annotations``, no sidecar) runs the nuclei
detector (``--detector DIR``; default ``bundled``; ``none``: no detection) over the slide's tissue
(:func:`wsi_cosynth.detection.detect_slide`) and writes the detections beside the output,
``<out>.detections.geojson`` (QuPath detections: open them on the slide to see what the layouts
came from). They are the layouts of a synthetic export and, with ``--source real --labels
detect``, the labels of a real one (marked model-made in its metadata). A later export of the
same slide with the same detector reuses that file (the file records the detector's digest and the
slide); anything else is detected afresh.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..annotations import find_sidecar
from ..errors import CosynthError
from ..taxonomy import Taxonomy, is_unclassified, map_name


def detections_path(out: str | Path) -> Path:
    """Where an export writes the detections of its slide: beside the output, ``<out>.detections.geojson``."""
    out = Path(out)
    return out.parent / f"{out.name}.detections.geojson"


NO_DETECTOR = "none"


@dataclass(frozen=True)
class Detected:
    """Detections written for an export: their file, the notice line to print, and who made
    them (``labels_by``: the detector's name and digest, for the dataset's metadata)."""

    path: Path
    note: str
    labels_by: str


def needs_detection(slide: str | Path, annotations: str | Path | None, detector: str | Path | None) -> bool:
    """True when a detector is given (not ``none``) and the slide has neither ``annotations`` nor a sidecar file."""
    return (detector is not None and str(detector) != NO_DETECTOR and annotations is None
            and find_sidecar(Path(slide)) is None)


def detector_folder(detector: str | Path) -> Path:
    """The directory of ``detector`` (``"bundled"``: the bundled detector's)."""
    from ..api import default_detector_path

    return default_detector_path() if str(detector) == "bundled" else Path(detector)


def detections_unusable(detector: str | Path, taxonomy: Taxonomy, class_map: dict[str, str] | None,
                        unknown_class: bool) -> str | None:
    """Why the detector's nuclei cannot be a synthesis model's layouts, or None when they can.

    A class of the detector must map by name into ``taxonomy`` (``class_map`` first), or be "no
    class" for a model that draws an unknown class; the bundled detector's one class, "nucleus",
    needs such a model or ``--default-class``."""
    from ..detection import load_detector

    for name in load_detector(detector_folder(detector)).taxonomy.names:
        try:
            map_name(name, taxonomy, class_map)
        except CosynthError:
            if not (unknown_class and is_unclassified(name)):
                return (f"the detector's class {name!r} is none of the model's ({', '.join(taxonomy.names)}), "
                        "which has no unknown class")
    return None


def _matches(path: Path, digest: str, slide: Path) -> bool:
    """Whether ``path`` holds detections of ``slide`` by the detector of ``digest`` (its header)."""
    try:
        with open(path, encoding="utf-8") as fh:
            head = json.loads(fh.read()).get("wsi_cosynth", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(head, dict) and head.get("detector") == digest and head.get("slide") == str(slide.resolve())


def detect_for_export(slide: str | Path, path: str | Path, detector: str | Path, *, slide_mpp: float | None,
                      min_tissue: float, progress: bool) -> Detected:
    """Detect the slide's nuclei into ``path`` for an export (or reuse the detections already
    there: same slide, same detector); a single-slide export's ``path`` is :func:`detections_path`.

    Windows with at least min(``min_tissue``, 2%) tissue are searched: every export tile with
    ``min_tissue`` lies inside such windows."""
    from ..detection import DetectOptions, detect_slide, load_detector
    from ..detection.slide_detect import detector_digest

    folder = detector_folder(detector)
    net = load_detector(folder)
    digest = detector_digest(folder)
    path = Path(path)
    labels_by = f"nuclei detector {folder.name} (digest {digest})"
    if path.exists() and _matches(path, digest, Path(slide)):
        n = len(json.loads(path.read_text())["features"])
        return Detected(path, f"slide has no nuclei annotations: using the {n} nuclei detected earlier ({path})",
                        labels_by)
    if path.exists():
        raise CosynthError(f"{path} exists and holds other detections (another slide or detector): move it away")
    options = DetectOptions(min_tissue=min(float(min_tissue), DetectOptions().min_tissue))
    result = detect_slide(slide, path, net, digest=digest, slide_mpp=slide_mpp, options=options, progress=progress)
    return Detected(path, f"slide has no nuclei annotations: using the {result.n_nuclei} nuclei found by the detector "
                          f"{folder.name} ({path})", labels_by)
