"""Every PNG this package writes decodes to exactly the pixels it was given.

The encoder (``wsi_cosynth/png.py``) is checked against two independent decoders, Pillow and
libpng (``imagecodecs.png_decode``); then each writer that stores PNGs is run on real tiles
(CoNSeP for the dataset formats, a MoNuSAC slide for ``tiles``) and every written image is
compared with the array it came from.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from conftest import data_path
from PIL import Image

from wsi_cosynth.exporters import WRITE_FORMATS, open_writer, read_dataset
from wsi_cosynth.png import encode_png
from wsi_cosynth.render import preview, save_png

# Dataset formats whose tile images are PNG files under images/ (PanNuke stores them in images.npy).
PNG_FORMATS = {"coco", "lizard", "consep", "geojson"}
N_TILES = 6


def _pillow(blob: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(blob)) as im:
        assert im.format == "PNG"
        return np.asarray(im)


def _decoded_by_both(path_or_blob: Path | bytes) -> tuple[np.ndarray, np.ndarray]:
    blob = path_or_blob.read_bytes() if isinstance(path_or_blob, Path) else path_or_blob
    return _pillow(blob), imagecodecs.png_decode(blob)


def _assert_exact(decoded: np.ndarray, expected: np.ndarray) -> None:
    assert decoded.dtype == expected.dtype and decoded.shape == expected.shape
    assert np.array_equal(decoded, expected)


# ----------------------------------------------------------------------------------------- the encoder
@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3), (37, 53, 4), (1, 1, 3), (1, 29, 3), (31, 1), (256, 256, 3)])
def test_uint8_images_decode_exactly_in_pillow_and_libpng(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    image[: shape[0] // 2] = image[0]  # flat runs as well as noise, so Up-filtered rows hit zero
    for decoded in _decoded_by_both(encode_png(image)):
        _assert_exact(decoded, image)


@pytest.mark.parametrize("shape", [(19, 23), (19, 23, 3)])
def test_uint16_images_decode_exactly_in_libpng(shape):
    image = np.random.default_rng(1).integers(0, 65536, shape, dtype=np.uint16)
    _assert_exact(imagecodecs.png_decode(encode_png(image)), image)
    if len(shape) == 2:  # Pillow reads 16-bit greyscale (not 16-bit RGB) as it is
        _assert_exact(_pillow(encode_png(image)).astype(np.uint16), image)


def test_strided_and_big_endian_inputs_are_written_as_their_values():
    base = np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    view = base[::2, 5:50:3]  # not contiguous
    _assert_exact(_pillow(encode_png(view)), np.ascontiguousarray(view))
    big_endian = np.arange(24, dtype=">u2").reshape(4, 6) * 1000
    _assert_exact(imagecodecs.png_decode(encode_png(big_endian)), big_endian.astype(np.uint16))
    single_channel = base[..., :1]
    _assert_exact(_pillow(encode_png(single_channel)), base[..., 0])


@pytest.mark.parametrize("image, message", [
    (np.zeros((4, 4), np.float32), "uint8 or uint16"),
    (np.zeros((4, 4), np.int16), "uint8 or uint16"),
    (np.zeros((4, 4, 2), np.uint8), "(H, W, 1|3|4)"),
    (np.zeros((0, 4, 3), np.uint8), "H, W >= 1"),
    (np.zeros(16, np.uint8), "(H, W)"),
])
def test_images_png_cannot_hold_are_refused_by_name(image, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
        encode_png(image)


# ----------------------------------------------------------------------------------------- the writers
@pytest.fixture(scope="module")
def consep_tiles():
    return list(itertools.islice(read_dataset(data_path("consep", "train"), "consep"), N_TILES))


@pytest.mark.parametrize("fmt", WRITE_FORMATS)
def test_dataset_images_decode_to_the_source_tiles(fmt, consep_tiles, tmp_path):
    out = tmp_path / fmt
    with open_writer(fmt, out, consep_tiles[0].taxonomy) as writer:
        for tile in consep_tiles:
            writer.add(tile)
    pngs = sorted(out.rglob("*.png"))
    if fmt not in PNG_FORMATS:
        assert pngs == []  # a format that starts writing PNGs must join PNG_FORMATS
        return
    assert [p.stem for p in pngs] == [t.provenance.name for t in consep_tiles]
    for path, tile in zip(pngs, consep_tiles):
        assert path.parent.name == "images"
        for decoded in _decoded_by_both(path):
            _assert_exact(decoded, tile.image)


def test_export_preview_decodes_to_the_rendered_grid(consep_tiles, tmp_path):
    grid = preview(consep_tiles)
    save_png(tmp_path / "preview.png", grid)
    for decoded in _decoded_by_both(tmp_path / "preview.png"):
        _assert_exact(decoded, grid)


def test_slide_tiles_mask_and_thumbnail_decode_to_what_was_read(tmp_path):
    from wsi_cosynth.pipeline.planning import iter_slide_tiles, plan_slide
    from wsi_cosynth.pipeline.tiling import overview_image, write_tiles

    slide = data_path("monusac", "A9K0_1.svs")
    options = {"mpp": 0.5, "tile_size": 128}
    out = tmp_path / "tiles"
    write_tiles(slide, None, out, **options)
    with plan_slide(slide, None, **options) as plan:
        read = {t.position.name: t.image for t in iter_slide_tiles(plan, workers=1)}
        mask = plan.tissue_mask.mask.astype(np.uint8) * 255
        thumbnail = overview_image(plan)
    written = sorted((out / "tiles").glob("*.png"))
    assert len(written) == len(read) > 0
    for path in written:
        for decoded in _decoded_by_both(path):
            _assert_exact(decoded, read[path.stem])
    for name, expected in (("tissue_mask.png", mask), ("thumbnail.png", thumbnail)):
        for decoded in _decoded_by_both(out / name):
            _assert_exact(decoded, expected)
