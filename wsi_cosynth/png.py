"""PNG encoding for the images of every dataset and tile writer (tiles, tissue masks, previews).

One encoder so that every writer gives the same kind of file: each scanline is filtered with the
PNG "Up" filter (the byte above subtracted, one numpy pass) and the whole image is compressed at
once by libdeflate (shipped inside ``imagecodecs``, a dependency) at level 1. The files are plain
non-interlaced PNGs (IHDR, IDAT, IEND); every decoder reads back exactly the array that was given.

Why this encoder (``benchmarks/png_encoding.py`` on the 432 CoNSeP 256 x 256 training tiles; the
table and the load are in benchmarks/README.md): Pillow at level 1, which the writers used before,
spends most of its time choosing a filter per row; Up + libdeflate level 1 encodes a tile 3.9x
faster (4.3 vs 16.6 ms under load) into files of about the same size (103.7 KiB against Pillow's
102.1 KiB at level 1 and 97.7 KiB at its default level 6), and numpy and libdeflate release the
GIL, so the writers' background threads encode in parallel. zlib-ng level 1 was as fast but wrote
files 35% larger; libpng (``imagecodecs.png_encode``) with one fixed filter took ~1.7x as long.

References: PNG specification (W3C, 2nd ed.), sections 5 (datastream), 9 (filtering), 11.2.2 (IHDR).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type by channel count: greyscale, RGB, RGBA (spec 11.2.2).
COLOUR_TYPE = {1: 0, 3: 2, 4: 6}
FILTER_UP = 2
# libdeflate level 1: the fastest level, with files within 2% of Pillow's level 1
# (benchmarks/png_encoding.py); levels 2-6 saved 2-4% of the bytes for 1.3-1.9x the time.
DEFLATE_LEVEL = 1
# An IDAT chunk holds at most 2**31 - 1 bytes (spec 5.3); split well below that.
MAX_IDAT_BYTES = 1 << 30


def encode_png(image: np.ndarray, *, level: int = DEFLATE_LEVEL) -> bytes:
    """The PNG bytes of ``image``.

    Parameters
    ----------
    image : (H, W) or (H, W, C) uint8 or uint16 ndarray, C in {1, 3, 4}
        Greyscale, RGB or RGBA pixels, row-major; H, W >= 1.
    level : int
        libdeflate compression level, 1 (fastest) to 12.

    Returns
    -------
    bytes
        A PNG (8 or 16 bits per sample) that decodes to exactly ``image``.

    Raises
    ------
    ValueError
        If the shape or dtype cannot be written as PNG.
    """
    pixels = _validate_image(image)
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    idat = deflate(up_filtered(pixels), level=level)
    return png_datastream(pixels.shape[1], pixels.shape[0], 8 * pixels.dtype.itemsize, channels, idat)


def up_filtered(pixels: np.ndarray) -> np.ndarray:
    """(H, 1 + W * C * bytes per sample) uint8: each scanline's filter byte (Up) and filtered bytes.

    Up (spec 9.2): Filt(x) = Orig(x) - Orig(b) mod 256, b the byte above; the row above the first
    is zeros. 16-bit samples are stored big-endian, and the filter works on bytes either way.
    """
    height = pixels.shape[0]
    rows = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder(">")).view(np.uint8).reshape(height, -1)
    scanlines = np.empty((height, rows.shape[1] + 1), dtype=np.uint8)
    scanlines[:, 0] = FILTER_UP
    scanlines[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=scanlines[1:, 1:])
    return scanlines


def png_datastream(width: int, height: int, bit_depth: int, channels: int, idat: bytes) -> bytes:
    """A whole PNG: signature, IHDR, the zlib stream ``idat`` in IDAT chunks, IEND (spec 5)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, COLOUR_TYPE[channels], 0, 0, 0)
    parts = [SIGNATURE, _chunk(b"IHDR", header)]
    parts += [_chunk(b"IDAT", idat[i : i + MAX_IDAT_BYTES]) for i in range(0, len(idat), MAX_IDAT_BYTES)]
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def deflate(data: np.ndarray, *, level: int = DEFLATE_LEVEL) -> bytes:
    """A zlib stream (RFC 1950, as IDAT holds) of ``data``'s bytes: libdeflate, or the standard
    library's zlib where this build of imagecodecs lacks libdeflate (same format, slower)."""
    import imagecodecs

    if imagecodecs.DEFLATE.available:
        return imagecodecs.deflate_encode(data, level=level)
    return zlib.compress(data, min(level, 9))


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write ``image`` (see :func:`encode_png`) to ``path`` as it is (no temporary name: for files
    inside an output directory that is itself renamed into place when complete)."""
    Path(path).write_bytes(encode_png(image))


def _validate_image(image: np.ndarray) -> np.ndarray:
    pixels = np.asarray(image)
    if pixels.dtype.kind != "u" or pixels.dtype.itemsize not in (1, 2):
        raise ValueError(f"PNG image must be uint8 or uint16, got dtype {pixels.dtype}")
    channels = 1 if pixels.ndim == 2 else (pixels.shape[2] if pixels.ndim == 3 else 0)
    if channels not in COLOUR_TYPE or pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ValueError(f"PNG image must be (H, W) or (H, W, 1|3|4) with H, W >= 1, got shape {pixels.shape}")
    return pixels[..., 0] if pixels.ndim == 3 and channels == 1 else pixels


def _chunk(kind: bytes, data: bytes) -> bytes:
    """Length, type, data and the CRC-32 of type + data (spec 5.3)."""
    crc = zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
