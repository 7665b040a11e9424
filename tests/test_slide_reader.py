"""Reading slides at a chosen mpp: level choice, anti-aliased resize, mpp detection, bad input."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
from conftest import data_path
from slide_fixtures import block_mean, psnr, synthetic_he, write_svs

from wsi_cosynth.errors import CosynthError
from wsi_cosynth.slide import SlideReader, best_level, slide_mpp_from_properties
from wsi_cosynth.slide.resolution import level_window


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    image = synthetic_he(1024, 1024, seed=1, tissue_fraction=1.0)
    path = write_svs(tmp_path_factory.mktemp("svs") / "pyr.svs", image, mpp=0.25, downsamples=(1, 4))
    return path, image


def test_best_level_picks_coarsest_level_not_coarser_than_request():
    ds = [1.0, 4.0, 16.0]
    assert best_level(ds, 1.0) == 0
    assert best_level(ds, 2.0) == 0
    assert best_level(ds, 3.9999) == 1  # within tolerance of level 1
    assert best_level(ds, 4.0) == 1
    assert best_level(ds, 15.0) == 1
    assert best_level(ds, 64.0) == 2
    assert best_level(ds, 0.5) == 0


def test_level_window_is_exact_on_grid_and_padded_off_grid():
    win = level_window((400, 800), (100, 50), 4.0, 1, 4.0)
    assert (win.x_level, win.y_level, win.w_level, win.h_level) == (100, 200, 100, 50)
    assert win.box == (0.0, 0.0, 100.0, 50.0)
    off = level_window((401, 800), (100, 50), 4.0, 1, 4.0)
    assert off.x_level == 99 and off.box[0] == pytest.approx(1.25)


def test_generated_pyramid_opens_as_aperio(pyramid):
    path, image = pyramid
    with SlideReader(path) as r:
        assert r.properties["openslide.vendor"] == "aperio"
        assert r.mpp == pytest.approx(0.25)
        assert r.level_downsamples == [1.0, 4.0]
        assert r.dimensions == (1024, 1024)


@pytest.mark.parametrize("mpp,factor,level", [(0.5, 2, 0), (1.0, 4, 1)])
def test_read_at_mpp_matches_downsampled_level0(pyramid, mpp, factor, level):
    path, _ = pyramid
    with SlideReader(path) as r:
        assert r.level_for(mpp) == level
        native = r.read_region((0, 0), (1024, 1024), 0.25)  # decoded level 0, as stored
        out = r.read_region((256, 512), (128, 96), mpp)
    assert out.shape == (96, 128, 3) and out.dtype == np.uint8
    ref = block_mean(native, factor)[512 // factor:512 // factor + 96, 256 // factor:256 // factor + 128]
    assert psnr(out, ref) > 35.0


def test_read_at_one_mpp_uses_level1_pixels(pyramid):
    path, _ = pyramid
    osr = openslide.OpenSlide(str(path))
    level1 = np.asarray(osr.read_region((256, 512), 1, (64, 48)))[:, :, :3]
    osr.close()
    with SlideReader(path) as r:
        out = r.read_region((256, 512), (64, 48), 1.0)
    # Exactly the stored level-1 pixels: no level-0 decode, no resampling.
    np.testing.assert_array_equal(out, level1)


def test_fractional_and_outside_reads(pyramid):
    path, _ = pyramid
    with SlideReader(path) as r:
        out = r.read_region((1000, 1000), (64, 64), 0.5)  # runs 104 px past the 1024 edge
        shifted = r.read_region((100.5, 40.25), (32, 32), 0.5)
    assert (out[-10:, -10:] == 255).all()
    assert out[:5, :5].mean() < 250
    assert shifted.shape == (32, 32, 3)


def test_missing_mpp_needs_slide_mpp(tmp_path):
    path = write_svs(tmp_path / "nompp.svs", synthetic_he(256, 256), mpp=None, downsamples=(1,))
    with pytest.raises(CosynthError, match=r"nompp\.svs.*--slide-mpp"):
        SlideReader(path)
    with SlideReader(path, slide_mpp=0.3) as r:
        assert r.mpp == 0.3


def test_mpp_from_tiff_resolution_and_implausible_values():
    assert slide_mpp_from_properties({"tiff.XResolution": "40000", "tiff.ResolutionUnit": "centimeter"}) == pytest.approx(0.25)
    assert slide_mpp_from_properties({"tiff.XResolution": "101600", "tiff.ResolutionUnit": "inch"}) == pytest.approx(0.25)
    assert slide_mpp_from_properties({"tiff.XResolution": "72", "tiff.ResolutionUnit": "inch"}) is None
    assert slide_mpp_from_properties({"aperio.MPP": "0.4990"}) == pytest.approx(0.499)


def test_real_aperio_and_dicom_slides_open():
    with SlideReader(data_path("slides", "CMU-1-Small-Region.svs")) as r:
        assert r.dimensions == (2220, 2967) and r.mpp == pytest.approx(0.499)
        tile = r.read_region((800, 1200), (128, 128), 1.0)
        assert tile.shape == (128, 128, 3) and tile.mean() < 230  # tissue, not glass
    dcm = data_path("slides", "small_dicom.dcm")
    with pytest.raises(CosynthError, match="small_dicom.dcm"):
        SlideReader(dcm)  # records no pixel spacing
    with SlideReader(dcm, slide_mpp=0.5) as r:
        assert r.dimensions == (3236, 2638)
        full = r.read_region((0, 0), (1000, 1000), 0.5)
        half = r.read_region((0, 0), (500, 500), 1.0)
    assert psnr(half, block_mean(full, 2)) > 35.0  # frames are stitched consistently


@pytest.mark.parametrize("content", [b"not a slide at all\n" * 100, b""])
def test_not_a_slide_is_a_clear_error(tmp_path, content):
    bad = tmp_path / "bad.svs"
    bad.write_bytes(content)
    with pytest.raises(CosynthError, match=r"bad\.svs"):
        SlideReader(bad)


def test_truncated_slide_is_a_clear_error(tmp_path, pyramid):
    path, _ = pyramid
    cut = tmp_path / "cut.svs"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(CosynthError, match=r"cut\.svs"):
        with SlideReader(cut) as r:
            r.read_region((0, 0), (1024, 1024), 0.25)


def test_missing_slide_and_unknown_backend(tmp_path):
    with pytest.raises(CosynthError, match="not found"):
        SlideReader(tmp_path / "nope.svs")
    with pytest.raises(CosynthError, match="backend"):
        SlideReader(tmp_path / "nope.svs", backend="nope")  # type: ignore[arg-type]


def test_tiatoolbox_backend_absent_is_a_clear_error(pyramid):
    pytest.importorskip("openslide")
    try:
        import tiatoolbox  # noqa: F401
    except ImportError:
        with pytest.raises(CosynthError, match="tiatoolbox"):
            SlideReader(pyramid[0], backend="tiatoolbox")
    else:
        pytest.skip("tiatoolbox is installed here")


def test_thumbnail_of_a_single_level_slide_is_read_in_bounded_blocks(tmp_path):
    """Without a coarse level the thumbnail decodes level 0; blocks keep each decode small."""
    image = synthetic_he(600, 900, seed=4, tissue_fraction=0.8)
    path = write_svs(tmp_path / "flat.svs", image, mpp=0.25, downsamples=(1,))
    with SlideReader(path, direct_jpeg=False) as reader:  # the backend's decode of level 0
        whole = reader.read_thumbnail(2.0)
        decoded = []
        read_window = reader._source.read_window_image

        def recording(level, x, y, w, h):  # a spy: the real reader still decodes
            decoded.append(w * h)
            return read_window(level, x, y, w, h)

        reader._source.read_window_image = recording
        blocks = reader.read_thumbnail(2.0, max_level_pixels=64 * 64)
    assert whole.shape == (75, 112, 3)
    assert len(decoded) > 10 and max(decoded) <= 2 * (64 + 16) ** 2  # a block plus its resampling margin
    assert np.abs(blocks.astype(int) - whole.astype(int)).max() <= 1
    assert psnr(whole, block_mean(image[:600, :896], 8)) > 35


@pytest.mark.parametrize("keep", [140, 300, 700, 5000, 200_000])
def test_truncated_dicom_is_a_clear_error(tmp_path, keep):
    """Cut inside the meta header, the dataset, the frame table and the pixel data."""
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data_path("slides", "small_dicom.dcm").read_bytes()[:keep])
    with pytest.raises(CosynthError, match=r"cut\.dcm"):
        with SlideReader(cut, slide_mpp=0.5) as r:
            r.read_region((0, 0), (3236, 2638), 0.5)  # a file that opens must still fail on its missing pixels


def test_dicom_header_cut_at_every_byte_is_a_clear_error(tmp_path):
    """Every cut inside the headers (e.g. between a long VR's length bytes) is a CosynthError."""
    from wsi_cosynth.slide.dicom import DicomFrames

    data = data_path("slides", "small_dicom.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    for keep in range(132, 1600):
        cut.write_bytes(data[:keep])
        with pytest.raises(CosynthError, match=r"cut\.dcm"):
            DicomFrames(cut)
