"""Plain images as single-level slides: strip/tiled TIFF, OME-TIFF, BigTIFF, PNG, JPEG."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from wsi_cosynth.cli import main
from wsi_cosynth.errors import CosynthError
from wsi_cosynth.slide import SlideReader
from slide_fixtures import synthetic_he
from wsi_cosynth.slide.plain import PlainImageSource, TiffRegionSource, ome_mpp, plain_kind, tiff_tag_mpp


def _image(h: int = 300, w: int = 400, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _strip_tiff(path, image, *, mpp=0.252, compression="zlib", rowsperstrip=37, **kw):
    res = {} if mpp is None else dict(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    tifffile.imwrite(path, image, photometric="rgb", rowsperstrip=rowsperstrip, compression=compression, **res, **kw)
    return path


@pytest.mark.parametrize("compression", [None, "zlib", "lzw", "packbits"])
def test_strip_tiff_reads_by_region_exactly(tmp_path, compression):
    image = _image()
    path = _strip_tiff(tmp_path / "a.tif", image, compression=compression)
    with SlideReader(path) as reader:
        assert isinstance(reader._source, TiffRegionSource)
        assert reader.dimensions == (400, 300)
        assert reader.mpp == pytest.approx(0.252)
        # A window crossing strip borders and the bottom-right edge: pixels, then white outside.
        out = reader.read_region((390, 280), (20, 30), 0.252)
        expected = np.full((30, 20, 3), 255, np.uint8)
        expected[:20, :10] = image[280:300, 390:400]
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(reader.read_region((0, 0), (400, 300), 0.252), image)


def test_tiff_window_decodes_only_the_strips_it_touches(tmp_path, monkeypatch):
    path = _strip_tiff(tmp_path / "a.tif", _image(), rowsperstrip=10)
    source = TiffRegionSource(path)
    level = source._levels[0]
    seen: list[int] = []
    real = level._segment
    monkeypatch.setattr(level, "_segment", lambda i: seen.append(i) or real(i))
    source.read_window(0, 5, 95, 50, 20)  # rows 95..114: strips 9, 10, 11
    assert seen == [9, 10, 11]
    source.close()


def test_planar_grey_palette_and_rgba_tiffs(tmp_path):
    image = _image(64, 80)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(image, 2, 0), photometric="rgb", planarconfig="separate",
                     rowsperstrip=16, compression="zlib")
    grey = image[..., 0]
    tifffile.imwrite(tmp_path / "grey.tif", grey, photometric="minisblack", rowsperstrip=16)
    rgba = np.concatenate([image, np.full((64, 80, 1), 255, np.uint8)], axis=2)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"], rowsperstrip=16)
    for name, expected in (("planar", image), ("grey", np.repeat(grey[..., None], 3, 2)), ("rgba", image)):
        with SlideReader(tmp_path / f"{name}.tif", slide_mpp=0.5) as reader:
            np.testing.assert_array_equal(reader.read_region((0, 0), (80, 64), 0.5), expected, err_msg=name)


def test_ome_tiff_mpp_and_bigtiff(tmp_path):
    image = _image(100, 120)
    tifffile.imwrite(tmp_path / "a.ome.tif", image, photometric="rgb", rowsperstrip=25,
                     metadata={"PhysicalSizeX": 300, "PhysicalSizeXUnit": "nm", "PhysicalSizeY": 300})
    with SlideReader(tmp_path / "a.ome.tif") as reader:
        assert reader.mpp == pytest.approx(0.3)
    _strip_tiff(tmp_path / "big.tif", image, bigtiff=True, mpp=0.5)
    with SlideReader(tmp_path / "big.tif") as reader:
        assert reader.mpp == pytest.approx(0.5)
        np.testing.assert_array_equal(reader.read_region((0, 0), (120, 100), 0.5), image)


def test_tiled_ome_tiff_opened_by_openslide_takes_the_ome_mpp(tmp_path):
    tifffile.imwrite(tmp_path / "t.ome.tif", _image(300, 400), photometric="rgb", tile=(256, 256),
                     metadata={"PhysicalSizeX": 0.46, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.46})
    with SlideReader(tmp_path / "t.ome.tif") as reader:
        assert type(reader._source).__name__ == "_OpenSlideSource"  # OpenSlide's generic TIFF
        assert reader.mpp == pytest.approx(0.46)


def test_resolution_helpers():
    assert tiff_tag_mpp((39683, 1), 3) == pytest.approx(0.252, abs=1e-4)
    assert tiff_tag_mpp((101600, 1), 2) == pytest.approx(0.25)
    assert tiff_tag_mpp((72, 1), 2) is None  # 72 dpi: a default, not a scan
    assert tiff_tag_mpp((0, 1), 3) is None
    desc = '<OME><Image><Pixels PhysicalSizeX="0.5" PhysicalSizeXUnit="µm" SizeX="3"/></Image></OME>'
    assert ome_mpp(desc) == pytest.approx(0.5)
    assert ome_mpp(desc.replace("µm", "mm")) is None  # 500 um/px is not a scan
    assert ome_mpp("Aperio Image Library") is None


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_png_and_jpeg_regions(tmp_path, fmt):
    image = synthetic_he(120, 160)
    path = tmp_path / f"a.{fmt}"
    Image.fromarray(image).save(path, quality=100) if fmt == "jpeg" else Image.fromarray(image).save(path)
    assert plain_kind(path) == fmt
    with SlideReader(path, slide_mpp=0.5) as reader:
        assert isinstance(reader._source, PlainImageSource)
        out = reader.read_region((0, 0), (160, 120), 0.5)
        err = np.abs(out.astype(int) - image.astype(int)).mean()
        assert err == 0 if fmt == "png" else err < 3
        assert reader.read_region((0, 0), (80, 60), 1.0).shape == (60, 80, 3)


def test_png_density_gives_mpp(tmp_path):
    Image.fromarray(_image(20, 20)).save(tmp_path / "a.png", dpi=(101600, 101600))
    with SlideReader(tmp_path / "a.png") as reader:
        assert reader.mpp == pytest.approx(0.25, rel=1e-3)


# ----------------------------------------------------------------------------- bad input
def _error(fn) -> str:
    with pytest.raises(CosynthError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_or_default_resolution_says_how_to_give_it(tmp_path):
    path = _strip_tiff(tmp_path / "a.tif", _image(), mpp=None)
    assert "--slide-mpp" in _error(lambda: SlideReader(path))
    tifffile.imwrite(tmp_path / "dpi72.tif", _image(), photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    message = _error(lambda: SlideReader(tmp_path / "dpi72.tif"))
    assert "72 px per inch" in message and "--slide-mpp" in message
    Image.fromarray(_image(20, 20)).save(tmp_path / "a.jpg")
    assert "--slide-mpp" in _error(lambda: SlideReader(tmp_path / "a.jpg"))
    assert "positive" in _error(lambda: SlideReader(tmp_path / "a.jpg", slide_mpp=-0.25))
    assert "not a scan resolution" in _error(lambda: SlideReader(tmp_path / "a.jpg", slide_mpp=254.0))


def test_truncated_files_are_named(tmp_path):
    data = _strip_tiff(tmp_path / "a.tif", _image(), compression=None).read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    message = _error(lambda: SlideReader(tmp_path / "cut.tif", slide_mpp=0.5))
    assert "cut.tif" in message and "truncated" in message
    (tmp_path / "head.tif").write_bytes(data[:12])
    assert "head.tif" in _error(lambda: SlideReader(tmp_path / "head.tif", slide_mpp=0.5))
    Image.fromarray(_image()).save(tmp_path / "a.png")
    png = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    assert "cut.png" in _error(lambda: SlideReader(tmp_path / "cut.png", slide_mpp=0.5))


def _huge_header(path, kind: str) -> None:
    """A small image whose header claims 60000 x 60000 pixels."""
    if kind == "tiff":
        _strip_tiff(path, _image(16, 16), compression=None, rowsperstrip=16)
        with tifffile.TiffFile(path, mode="r+b") as tif:
            tif.pages[0].tags["ImageWidth"].overwrite(60000)
            tif.pages[0].tags["ImageLength"].overwrite(60000)
    else:
        import struct
        import zlib

        Image.fromarray(_image(16, 16)).save(path)
        data = bytearray(path.read_bytes())
        data[16:24] = struct.pack(">II", 60000, 60000)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["tiff", "png"])
def test_huge_header_is_one_clear_error(tmp_path, kind):
    path = tmp_path / f"huge.{'tif' if kind == 'tiff' else 'png'}"
    _huge_header(path, kind)
    message = _error(lambda: SlideReader(path, slide_mpp=0.5))
    assert "huge" in message and "60000" in message


def test_cli_bad_plain_input_exits_2_with_one_line(tmp_path, capsys):
    _huge_header(tmp_path / "huge.tif", "tiff")
    data = _strip_tiff(tmp_path / "a.tif", _image(), compression=None).read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 3])
    _strip_tiff(tmp_path / "nompp.tif", _image(), mpp=None)
    for name, extra in (("huge.tif", ["--slide-mpp", "0.5"]), ("cut.tif", ["--slide-mpp", "0.5"]),
                        ("nompp.tif", []), ("a.tif", ["--slide-mpp", "0"]), ("a.tif", ["--slide-mpp", "300"])):
        out = tmp_path / f"out-{name}"
        code = main(["tiles", "--slide", str(tmp_path / name), "--out", str(out), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert not out.exists()


@pytest.mark.parametrize("unit", ["um", "\u00b5m", "\u03bcm"])  # ASCII, MICRO SIGN, GREEK SMALL MU
def test_ome_micron_unit_in_every_spelling(unit):
    desc = f'<OME><Image><Pixels PhysicalSizeX="0.5" PhysicalSizeXUnit="{unit}" SizeX="3"/></Image></OME>'
    assert ome_mpp(desc) == 0.5
