"""Layouts for a slide nobody annotated: detect its nuclei first, then use them as annotations.

``export --detector DIR`` (``bundled``: the bundled detector) on a slide without annotations (no ``--annotations``, no sidecar) runs
the detector over the slide's tissue (:func:`wsi_cosynth.detection.detect_slide`) and writes the
detections beside the output, ``<out>.detections.geojson`` (QuPath detections: open them on the
slide to see what the layouts came from). A later export of the same slide with the same detector
reuses that file (the file records the detector's digest and the slide); anything else is
detected afresh.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..annotations import find_sidecar
from ..errors import CosynthError


def detections_path(out: str | Path) -> Path:
    """Where an export writes the detections of its slide: beside the output, ``<out>.detections.geojson``."""
    out = Path(out)
    return out.parent / f"{out.name}.detections.geojson"


def needs_detection(slide: str | Path, annotations: str | Path | None, detector: str | Path | None) -> bool:
    """True when a detector is given and the slide has neither ``annotations`` nor a sidecar file."""
    return detector is not None and annotations is None and find_sidecar(Path(slide)) is None


def _matches(path: Path, digest: str, slide: Path) -> bool:
    """Whether ``path`` holds detections of ``slide`` by the detector of ``digest`` (its header)."""
    try:
        with open(path, encoding="utf-8") as fh:
            head = json.loads(fh.read()).get("wsi_cosynth", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(head, dict) and head.get("detector") == digest and head.get("slide") == str(slide.resolve())


def detect_for_export(slide: str | Path, out: str | Path, detector: str | Path, *, slide_mpp: float | None,
                      min_tissue: float, progress: bool) -> tuple[Path, str]:
    """Detect the slide's nuclei for an export to ``out``; (the detections' path, a notice line).

    Windows with at least min(``min_tissue``, 2%) tissue are searched: every export tile with
    ``min_tissue`` lies inside such windows."""
    from ..detection import DetectOptions, detect_slide, load_detector
    from ..detection.slide_detect import detector_digest

    from ..api import default_detector_path

    folder = default_detector_path() if str(detector) == "bundled" else Path(detector)
    net = load_detector(folder)
    digest = detector_digest(folder)
    path = detections_path(out)
    if path.exists() and _matches(path, digest, Path(slide)):
        n = len(json.loads(path.read_text())["features"])
        return path, f"slide has no nuclei annotations: layouts from the {n} nuclei detected earlier ({path})"
    if path.exists():
        raise CosynthError(f"{path} exists and holds other detections (another slide or detector): move it away")
    options = DetectOptions(min_tissue=min(float(min_tissue), DetectOptions().min_tissue))
    result = detect_slide(slide, path, net, digest=digest, slide_mpp=slide_mpp, options=options, progress=progress)
    return path, (f"slide has no nuclei annotations: layouts from {result.n_nuclei} nuclei found by the detector "
                  f"{folder.name} ({path})")
