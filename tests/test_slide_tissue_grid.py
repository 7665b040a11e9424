"""Tissue masks and tile grids."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from slide_fixtures import synthetic_he

from wsi_cosynth.errors import CosynthError
from wsi_cosynth.slide import TissueParams, save_mask_png, tile_grid, tissue_fractions, tissue_mask_from_rgb


def test_mask_finds_tissue_half():
    rgb = synthetic_he(200, 200, tissue_fraction=0.5)
    mask, thr = tissue_mask_from_rgb(rgb, mpp=8.0)
    assert 0.05 <= thr <= 0.15
    assert mask[:, 110:].mean() > 0.99 and mask[:, :90].mean() < 0.01


def test_all_tissue_slide_is_all_tissue_and_blank_is_empty():
    # Otsu alone would split an edge-to-edge tissue image; the clamp keeps it whole.
    full, _ = tissue_mask_from_rgb(synthetic_he(100, 100, tissue_fraction=1.0), mpp=8.0)
    assert full.all()
    blank, _ = tissue_mask_from_rgb(np.full((100, 100, 3), 243, np.uint8), mpp=8.0)
    assert not blank.any()


def test_small_specks_removed_and_holes_filled():
    rgb = np.full((120, 120, 3), 245, np.uint8)
    rgb[20:100, 20:100] = (150, 70, 160)
    rgb[50:53, 50:53] = 245  # a 9-px hole
    rgb[5:7, 110:112] = (150, 70, 160)  # a 4-px speck
    mask, _ = tissue_mask_from_rgb(rgb, mpp=4.0, params=TissueParams(smooth_sigma_px=0, min_object_um2=200, max_hole_um2=400))
    assert mask[51, 51] and not mask[6, 111]
    od, _ = tissue_mask_from_rgb(rgb, mpp=4.0, params=TissueParams(channel="optical_density", smooth_sigma_px=0))
    assert od[60, 60] and not od[10, 10]
    with pytest.raises(CosynthError, match="channel"):
        tissue_mask_from_rgb(rgb, mpp=4.0, params=TissueParams(channel="hue"))  # type: ignore[arg-type]


def test_mask_png(tmp_path):
    mask = np.zeros((10, 20), bool)
    mask[2:5, 3:9] = True
    p = save_mask_png(tmp_path / "m.png", mask)
    back = np.asarray(Image.open(p))
    assert back.shape == (10, 20) and ((back == 255) == mask).all()


def test_grid_positions_level0_and_stride():
    g = tile_grid((1000, 600), 0.25, target_mpp=0.5, tile_size=100, min_tissue=0.0)
    # Tile side 200 level-0 px: 5 across, 3 down.
    assert len(g) == 15 and g.extent_level0 == 200
    assert list(g.x_level0[:5]) == [0, 200, 400, 600, 800] and list(np.unique(g.y_level0)) == [0, 200, 400]
    assert (g.x_level0 + 200 <= 1000).all() and (g.y_level0 + 200 <= 600).all()
    over = tile_grid((1000, 600), 0.25, target_mpp=0.5, tile_size=100, stride=50, min_tissue=0.0)
    assert list(over.x_level0[:3]) == [0, 100, 200] and len(over) == 9 * 5


def test_grid_tissue_fraction_filter():
    mask = np.zeros((60, 100), bool)  # 10 level-0 px per mask px
    mask[:, :30] = True  # tissue on x < 300
    boxes = np.array([[0, 0, 200, 200], [200, 0, 400, 200], [400, 0, 600, 200]], float)
    np.testing.assert_allclose(tissue_fractions(boxes, mask, 10.0), [1.0, 0.5, 0.0])
    g = tile_grid((1000, 600), 0.25, target_mpp=0.5, tile_size=100, min_tissue=0.5, tissue_mask=mask, mask_scale=10.0)
    assert set(g.x_level0.tolist()) == {0, 200} and (g.tissue_fraction >= 0.5).all()


def test_grid_bad_arguments():
    with pytest.raises(CosynthError, match="min tissue"):
        tile_grid((100, 100), 0.25, min_tissue=2.0)
    with pytest.raises(CosynthError, match="stride"):
        tile_grid((100, 100), 0.25, stride=0)
    with pytest.raises(CosynthError, match="mpp"):
        tile_grid((100, 100), 0.25, target_mpp=-1)


@pytest.mark.parametrize("slide_mpp, w0", [(0.2627, 1949), (0.2627, 3898), (0.252, 2000), (0.3333, 2000)])
def test_grid_tiles_stay_inside_the_slide_at_non_integer_scales(slide_mpp, w0):
    """At 0.2627 um/px a 1,949 px wide slide fits 2 tiles with 0.45 px to spare: rounding the
    second tile's position would push it past the edge."""
    h0 = 1500
    grid = tile_grid((w0, h0), slide_mpp, target_mpp=0.5, tile_size=256)
    extent = 256 * 0.5 / slide_mpp
    assert len(grid) > 0
    assert (grid.x_level0 + extent <= w0 + 1e-9).all() and (grid.y_level0 + extent <= h0 + 1e-9).all()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_otsu_and_small_object_removal_equal_scikit_image(seed):
    """Tissue detection no longer imports scikit-image; its two steps must give the same result."""
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects as sk_remove

    from wsi_cosynth.slide.tissue import otsu_threshold, remove_small_objects

    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(0.03, 0.01, 5000), rng.normal(0.3, 0.08, 3000 + 1000 * seed)]).astype(np.float32)
    values = values.reshape(-1, 100 if seed % 2 else 50)
    assert otsu_threshold(values) == float(threshold_otsu(values))
    mask = rng.random((120, 90)) > 0.55 + 0.05 * seed
    for size in (2, 5, 30):
        import inspect

        kw = {"max_size": size - 1} if "max_size" in inspect.signature(sk_remove).parameters else {"min_size": size}
        assert np.array_equal(remove_small_objects(mask, size), sk_remove(mask, **kw))
