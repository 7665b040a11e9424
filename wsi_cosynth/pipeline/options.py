"""The options of an export, as one frozen record shared by the CLI, the Python API and cohorts.

``wsi-cosynth export --cohort`` builds an :class:`ExportOptions` from its arguments once,
``wc.export_cohort(..., **options)`` builds it from keywords (an unknown keyword is a TypeError
naming it, never swallowed), and a cohort gives each slide its own copy with the CSV row's
``tissue`` and ``slide_mpp`` in place (:meth:`ExportOptions.for_slide`). Fields left None take
the source's default: the model's resolution and tile size for synthetic tiles, 0.5 um/px and
256 px for real ones; the model's own sampling settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import CosynthError
from ..exporters import WRITE_FORMATS
from ..slide import TissueParams
from .slide_look import COLOUR_MATCHES

SOURCES: tuple[str, ...] = ("synthetic", "real")
REAL_DEFAULT_MPP = 0.5
REAL_DEFAULT_TILE_SIZE = 256


@dataclass(frozen=True)
class ExportOptions:
    """Every option of an export except the slide, its annotations and the output directory.

    Groups: where tiles come from (``source``, ``format``); the tile grid (``mpp`` um/px,
    ``tile_size`` px, ``stride`` px, ``min_tissue`` 0..1, ``slide_mpp``, ``tissue``,
    ``tissue_regions``, ``tissue_params``, ``pad`` RGB, ``sidecar``); classes (``taxonomy``,
    ``class_map``, ``default_class``); synthesis (``model``, ``layouts``, ``layout_model``,
    ``per_layout``, ``max_tiles``, ``seed``, sampling settings, ``colour_match``, ``batch_size``,
    ``device``); unannotated slides (``detector``: directory, ``"bundled"`` or ``"none"``;
    ``labels``: ``"annotations"`` or ``"detect"``, real tiles);
    scale-out (``threads`` torch threads per synthesis task, ``workers``, ``scheduler``,
    ``restart``); output (``overwrite``, ``writer_options`` of the format, ``progress``).
    """

    source: str = "synthetic"
    format: str = "coco"
    # tile grid (see plan_slide)
    mpp: float | None = None
    tile_size: int | None = None
    stride: int | None = None
    min_tissue: float = 0.5
    slide_mpp: float | None = None
    tissue: str | None = None
    tissue_regions: str | Path | None = None
    tissue_params: TissueParams = field(default_factory=TissueParams)
    pad: tuple[int, int, int] | None = None
    sidecar: bool = True
    # classes
    taxonomy: str | None = None
    class_map: dict[str, str] | None = None
    default_class: str | None = None
    # synthesis (source "synthetic")
    model: str | Path | None = None
    layouts: str = "auto"
    layout_model: str | Path | None = None
    per_layout: int = 1
    max_tiles: int | None = None
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    eta: float | None = None
    spacing: str | None = None
    final_label: str | None = None
    colour_match: str = "tile"
    detector: str | Path | None = "bundled"
    labels: str = "annotations"
    batch_size: int = 4
    device: str = "auto"
    # scale-out
    threads: int | None = None
    workers: int = 0
    scheduler: str | None = None
    restart: bool = False
    # output
    overwrite: bool = False
    writer_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = False

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise CosynthError(f"unknown source {self.source!r} (valid: {', '.join(SOURCES)})")
        if str(self.format).lower() not in WRITE_FORMATS:
            raise CosynthError(f"unknown export format {self.format!r} (valid: {', '.join(WRITE_FORMATS)})")
        object.__setattr__(self, "format", str(self.format).lower())
        for name, low in (("per_layout", 1), ("batch_size", 1), ("max_tiles", 1), ("threads", 1), ("workers", 0),
                          ("tile_size", 1), ("stride", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                raise CosynthError(f"--{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")
        for name in ("mpp", "slide_mpp"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < float(value) < float("inf")):
                raise CosynthError(f"--{name.replace('_', '-')} must be a positive number of microns per pixel, "
                                   f"got {value!r}")
        if not 0.0 <= float(self.min_tissue) <= 1.0:
            raise CosynthError(f"--min-tissue must be between 0 and 1, got {self.min_tissue!r}")
        if self.colour_match not in COLOUR_MATCHES:
            raise CosynthError(f"unknown --colour-match {self.colour_match!r} (valid: {', '.join(COLOUR_MATCHES)})")
        if self.labels not in ("annotations", "detect"):
            raise CosynthError(f"unknown --labels {self.labels!r} (valid: annotations, detect)")
        if self.workers and self.scheduler is not None:
            raise CosynthError("give either --workers N (a local cluster) or --scheduler ADDRESS, not both")

    @classmethod
    def from_keywords(cls, **options: Any) -> "ExportOptions":
        """The record from keyword options; an unknown keyword is a TypeError that lists the valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"unknown export option(s) {unknown} (valid: {', '.join(sorted(names))})")
        return cls(**options)

    def for_slide(self, *, tissue: str | None, slide_mpp: float | None) -> "ExportOptions":
        """A copy for one slide: a given tissue type or slide resolution takes the place of the default."""
        return replace(self, tissue=tissue if tissue is not None else self.tissue,
                       slide_mpp=slide_mpp if slide_mpp is not None else self.slide_mpp)

    def plan_kwargs(self, *, mpp: float, tile_size: int) -> dict[str, Any]:
        """Keyword arguments of :func:`~wsi_cosynth.pipeline.planning.plan_slide` at ``mpp`` and ``tile_size``."""
        return dict(mpp=float(mpp), tile_size=int(tile_size), stride=self.stride, min_tissue=self.min_tissue,
                    slide_mpp=self.slide_mpp, tissue=self.tissue, tissue_regions=self.tissue_regions,
                    tissue_params=self.tissue_params, sidecar=self.sidecar, pad=self.pad)

    def settings_record(self, keys: tuple[str, ...]) -> dict[str, Any]:
        """The named options as JSON-friendly values (for a resume manifest)."""
        record = asdict(self)
        return {k: _jsonable(record[k]) for k in keys}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
