"""The direct JPEG read route: same pixels as OpenSlide + area resize within PSNR >= 40 dB.

Every comparison opens the slide twice, once with the route (default) and once with
``direct_jpeg=False`` (OpenSlide read, PIL BOX resize), and checks the route really served the
reads, so a silent fallback cannot pass as a match.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import data_path
from slide_fixtures import psnr, synthetic_he, write_svs

from wsi_cosynth.pipeline.planning import iter_slide_tiles, plan_slide
from wsi_cosynth.slide import SlideReader

TOLERANCE_DB = 40.0


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    """An Aperio-style pyramid (levels 1/4/16, 256-px JPEG Q90 tiles) with glass and tissue."""
    image = synthetic_he(2048, 2560, seed=3, tissue_fraction=0.6, smooth_px=1.5)
    return write_svs(tmp_path_factory.mktemp("direct") / "pyr.svs", image, mpp=0.25, downsamples=(1, 4, 16), quality=90)


class _Counter:
    """Spy on SlideReader._read_direct: how many read_region calls the route served."""

    def __init__(self, monkeypatch):
        self.served = 0
        original = SlideReader._read_direct

        def read(reader, *args, **kwargs):
            out = original(reader, *args, **kwargs)
            self.served += out is not None
            return out

        monkeypatch.setattr(SlideReader, "_read_direct", read)


def _compare(path, requests, slide_mpp=None):
    """Worst PSNR (dB) of the routed reads against the OpenSlide + area-resize reads."""
    worst = float("inf")
    with SlideReader(path, slide_mpp=slide_mpp) as fast, SlideReader(path, slide_mpp=slide_mpp, direct_jpeg=False) as ref:
        for loc, size, factor in requests:
            a = fast.read_region(loc, size, fast.mpp * factor)
            b = ref.read_region(loc, size, ref.mpp * factor)
            assert a.shape == b.shape == (size[1], size[0], 3) and a.dtype == np.uint8
            worst = min(worst, psnr(a, b))
    return worst


@pytest.mark.parametrize("factor", [2, 8, 32, 64])
def test_generated_pyramid_reads_match_openslide_area_resize(pyramid, factor, monkeypatch):
    counter = _Counter(monkeypatch)
    size = (128, 96) if factor <= 8 else (16, 12)
    locs = [(0, 0), (1024, 512), (1536, 1024), (factor * 8, factor * 4)]
    assert _compare(pyramid, [(loc, size, factor) for loc in locs]) >= TOLERANCE_DB
    assert counter.served == len(locs)  # every one of these reads went through the route


def test_route_is_not_the_identity(pyramid):
    """DCT-domain shrinking differs from decode + BOX (else the tolerance would test nothing)."""
    with SlideReader(pyramid) as fast, SlideReader(pyramid, direct_jpeg=False) as ref:
        a = fast.read_region((1536, 1024), (256, 256), 0.5)
        b = ref.read_region((1536, 1024), (256, 256), 0.5)
    assert 0 < np.abs(a.astype(int) - b.astype(int)).max() <= 16


def test_off_grid_and_edge_reads_fall_back_byte_identical(pyramid, monkeypatch):
    counter = _Counter(monkeypatch)
    with SlideReader(pyramid) as fast, SlideReader(pyramid, direct_jpeg=False) as ref:
        for loc, size, mpp in [((1.5, 3.0), (64, 64), 0.5), ((1025, 512), (64, 64), 0.5), ((0, 0), (50, 50), 0.6),
                               ((2400, 1900), (128, 128), 0.5), ((-64, -64), (64, 64), 1.0)]:
            assert np.array_equal(fast.read_region(loc, size, mpp), ref.read_region(loc, size, mpp))
    assert counter.served == 0


def test_real_aperio_slide_with_rgb_coded_jpeg(monkeypatch):
    """CMU-1-Small-Region: photometric RGB JPEG tiles (240 px) that libjpeg alone would take for YCbCr."""
    path = data_path("slides", "CMU-1-Small-Region.svs")
    counter = _Counter(monkeypatch)
    requests = [((0, 0), (120, 120), 2), ((480, 720), (200, 160), 2), ((960, 960), (60, 60), 4), ((0, 1920), (30, 30), 8),
                ((240, 480), (240, 240), 1)]
    assert _compare(path, requests) >= TOLERANCE_DB
    assert counter.served == len(requests)


@pytest.mark.parametrize("parts", [("monusac", "A9K0_1.svs"), ("slides", "small_dicom.dcm")])
def test_real_slides_without_jpeg_tiles_read_as_before(parts, monkeypatch):
    """JPEG 2000 (MoNuSAC) and DICOM: no route; reads are the backend's, unchanged."""
    path = data_path(*parts)
    counter = _Counter(monkeypatch)
    slide_mpp = 0.25 if parts[1].endswith(".dcm") else None
    requests = [((0, 0), (100, 100), 2), ((400, 200), (64, 64), 4)]
    assert _compare(path, requests, slide_mpp=slide_mpp) == float("inf")
    assert counter.served == 0


def test_thread_pool_gives_the_tiles_in_grid_order(pyramid):
    with plan_slide(pyramid, None, mpp=0.5, tile_size=128, min_tissue=0.3) as plan:
        one = [(t.position.name, t.image) for t in iter_slide_tiles(plan, workers=1)]
        three = [(t.position.name, t.image) for t in iter_slide_tiles(plan, workers=3)]
    assert len(one) > 8 and [n for n, _ in one] == [n for n, _ in three]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(one, three))


def test_tissue_mask_and_tiles_match_the_reference_route(pyramid):
    """Plans with and without the route pick the same tiles; tile pixels within tolerance."""
    with plan_slide(pyramid, None, mpp=0.5) as plan:
        tiles = list(iter_slide_tiles(plan))
        ref = SlideReader(pyramid, direct_jpeg=False)
        for t in tiles:
            expected = ref.read_region((t.position.x_level0, t.position.y_level0), (256, 256), 0.5)
            assert psnr(t.image, expected) >= TOLERANCE_DB
        ref.close()
    assert len(tiles) > 10


def test_thread_pool_on_a_backend_with_a_frame_cache():
    """DICOM frames go through a cache that is not thread-safe: reads are serialised, same tiles."""
    path = data_path("slides", "small_dicom.dcm")
    with plan_slide(path, None, mpp=1.0, tile_size=64, min_tissue=0.0, slide_mpp=0.25) as plan:
        plan.reader._source._cache_frames = 2  # evict constantly, as a race would need
        one = [t.image for t in iter_slide_tiles(plan, workers=1)]
        four = [t.image for t in iter_slide_tiles(plan, workers=4)]
    assert len(one) > 20 and all(np.array_equal(a, b) for a, b in zip(one, four))
