"""Nuclei detection: the segmenter network (also the downstream benchmark's reference
segmenter), a detector's files, and windowed detection over a slide with a seam-free merge."""

from .model import Detections, Detector, load_detector
from .slide_detect import DetectOptions, DetectResult, detect_slide

__all__ = ["Detections", "Detector", "load_detector", "DetectOptions", "DetectResult", "detect_slide"]
