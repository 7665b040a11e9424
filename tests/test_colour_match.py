"""The slide's own look: CIELAB conversion, colour statistics, Reinhard matching (wsi_cosynth/colour.py),
the colour difference metric, and colour matching + real-beside-synthetic preview in the export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wsi_cosynth.colour import (ColourStats, as_colour_stats, colour_stats, lab_to_rgb, match_colour,
                                reference_per_layout, rgb_to_lab, tissue_weight)
from wsi_cosynth.errors import CosynthError
from wsi_cosynth.metrics.colour import colour_difference, mean_lab

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _he(seed: int, pink=(236, 170, 200), purple=(120, 60, 150), glass_cols: int = 0, size: int = 64) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((size, size)), 2)
    field = (field - field.min()) / np.ptp(field)
    rgb = np.array(pink)[None, None] * (1 - field[..., None]) + np.array(purple)[None, None] * field[..., None]
    rgb[:, :glass_cols] = 244
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def test_cielab_agrees_with_scikit_image_and_round_trips():
    from skimage.color import rgb2lab

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.abs(rgb_to_lab(rgb) - rgb2lab(rgb)).max() < 0.01
    assert np.array_equal(lab_to_rgb(rgb_to_lab(rgb)), rgb)
    with pytest.raises(CosynthError, match=r"\(H, W, 3\) uint8"):
        rgb_to_lab(rgb.astype(np.float32))


def test_glass_is_not_tissue():
    lab = rgb_to_lab(np.array([[[244, 244, 244], [236, 170, 200], [120, 60, 150]]], dtype=np.uint8))
    w = tissue_weight(lab)[0]
    assert w[0] < 0.05 and w[1] > 0.95 and w[2] > 0.99


def test_matching_moves_tissue_to_the_reference_and_keeps_glass():
    pale = _he(1, pink=(240, 200, 220), purple=(190, 150, 200), glass_cols=16)
    deep = _he(2, pink=(200, 110, 170), purple=(70, 20, 110))
    target = colour_stats(deep)
    out = match_colour(pale, deep)
    got = colour_stats(out[:, 16:])
    assert np.allclose(got.mean, target.mean, atol=1.5) and np.allclose(got.std, target.std, rtol=0.15, atol=1.0)
    assert np.abs(out[:, :14].astype(int) - pale[:, :14]).max() <= 2  # glass keeps its colour
    assert colour_difference([out[:, 16:]], [deep]) < 1.5 < colour_difference([pale[:, 16:]], [deep])
    # statistics, their dict and the image itself are the same reference
    assert np.array_equal(match_colour(pale, target), out)
    assert np.array_equal(match_colour(pale, target.to_dict()), out)


def test_colour_statistics_of_several_images_pool_their_pixels():
    a, b = _he(3), _he(4, pink=(210, 140, 190))
    pooled = colour_stats([a, b])
    assert np.allclose(pooled.mean, colour_stats(np.concatenate([a, b])).mean)
    assert np.allclose(mean_lab([a, b]), pooled.mean) and colour_difference([a], [a]) == 0.0


def test_bad_references_are_clear_errors():
    with pytest.raises(CosynthError, match="colour statistics must be"):
        ColourStats.from_dict({"mean": [1, 2], "std": [1, 1, 1]})
    with pytest.raises(CosynthError, match="non-negative"):
        as_colour_stats({"mean": [50, 0, 0], "std": [-1, 1, 1]})
    with pytest.raises(CosynthError, match="3 references for 2 layouts"):
        reference_per_layout([None, None, None], 2)
    one = ColourStats((50.0, 10.0, -5.0), (10.0, 5.0, 5.0))
    assert reference_per_layout(one, 3) == [one] * 3 and reference_per_layout(None, 2) == [None, None]


@pytest.fixture(scope="module")
def unknown_model(tmp_path_factory) -> Path:
    """An untrained tiny model (32 px tiles at 0.5 um/px, CoNSeP classes) WITH the unknown class."""
    from wsi_cosynth.models.config import load_config
    from wsi_cosynth.models.cosynth import CosynthModel
    from wsi_cosynth.taxonomy import get_taxonomy
    from wsi_cosynth.training.checkpoint import save_checkpoint

    config = load_config("tiny")
    config = config.model_copy(update={"model": config.model.model_copy(update={"unknown_class": True})})
    torch.manual_seed(0)
    model = CosynthModel(config, get_taxonomy("consep"), mpp=0.5, tile_size=32)
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny-unknown", model, steps=0)


@pytest.fixture(scope="module")
def unclassified_slide(tmp_path_factory) -> Path:
    """A 384 px slide at 0.25 um/px (deep purple tissue on the right) with nuclei that have no class."""
    from slide_fixtures import write_svs

    folder = tmp_path_factory.mktemp("unclassified")
    image = np.full((384, 384, 3), 244, np.uint8)
    image[:, 150:] = _he(5, pink=(190, 90, 160), purple=(80, 20, 120), size=384)[:, :234]
    slide = write_svs(folder / "deep.svs", image, mpp=0.25)
    rng = np.random.default_rng(3)
    features = []
    for _ in range(60):
        x, y = rng.uniform(170, 370), rng.uniform(10, 370)
        ring = [[x, y], [x + 6, y], [x + 6, y + 6], [x, y + 6], [x, y]]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": {"objectType": "detection"}})
    (folder / "deep.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return slide


def test_export_matches_each_tile_to_its_real_tile_without_a_default_class(unclassified_slide, unknown_model, tmp_path):
    from PIL import Image

    from wsi_cosynth.cli import main
    from wsi_cosynth.exporters import read_dataset
    from wsi_cosynth.pipeline.planning import plan_slide

    def export(out: Path, *extra: str) -> list:
        assert main(["export", "--slide", str(unclassified_slide), "--out", str(out), "--model", str(unknown_model),
                     "--format", "coco", "--steps", "2", "--max-tiles", "4", "--batch-size", "2", "--seed", "1",
                     "--tissue", "ovary", "--threads", "1", "--no-progress", *extra]) == 0
        return list(read_dataset(out, "coco"))

    matched, plain = export(tmp_path / "tile"), export(tmp_path / "none", "--colour-match", "none")
    assert len(matched) == len(plain) == 4
    with plan_slide(unclassified_slide, mpp=0.5, tile_size=32) as plan:
        real = {pos.name: plan.read_tile(pos) for pos in plan.positions()}
    for m, p in zip(matched, plain):
        own = real[m.provenance.name.rsplit("_s", 1)[0]]
        assert colour_difference([m.image], [own]) < 0.5 * colour_difference([p.image], [own])
        assert np.array_equal(m.instances, p.instances)  # only the look changes, not the labels
    # the preview: (real tile, synthetic with outlines, label) per tile, two tiles a row
    preview = np.asarray(Image.open(tmp_path / "tile" / "preview.png"))
    plain_preview = np.asarray(Image.open(tmp_path / "none" / "preview.png"))
    assert preview.shape == plain_preview.shape and preview.shape[1] == 6 * (32 + 4) + 4
    first_real = real[matched[0].provenance.name.rsplit("_s", 1)[0]]
    assert np.array_equal(preview[4:36, 4:36], first_real)
