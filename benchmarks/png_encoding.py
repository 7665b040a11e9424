"""PNG encoders on real CoNSeP tiles: encode time per image, throughput on two threads, file size.

Three kinds of image, all from the CoNSeP training tiles (256 x 256): the RGB tiles themselves
(what every dataset writer stores), their label pictures (``render.label_image``: class colours on
black, the preview's right-hand panels) and their nucleus masks (greyscale 0/255, like the tissue
mask of ``wsi-cosynth tiles``). Every candidate is checked to decode (Pillow) to exactly its input.
Candidates run interleaved, ``--rounds`` times (order reversed every other round); the median
round is reported. The load (uptime) is printed before and after; the last line is one JSON
object with all numbers.

Usage: python benchmarks/png_encoding.py [--data ../shared/data/consep/train] [--rounds 3] [--tiles 432]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from wsi_cosynth.png import deflate, encode_png, png_datastream, up_filtered

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("WSI_COSYNTH_DATA", REPO.parent / "shared" / "data")) / "consep" / "train"
Encoder = Callable[[np.ndarray], bytes]


def pillow(**save_options) -> Encoder:
    from PIL import Image

    def encode(image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG", **save_options)
        return buf.getvalue()

    return encode


def libpng(**options) -> Encoder:
    import imagecodecs

    return lambda image: imagecodecs.png_encode(image, **options)


def up_then(compress: Callable[[np.ndarray], bytes]) -> Encoder:
    """Our Up-filtered scanlines and container with another zlib-stream compressor (8-bit images)."""

    def encode(image: np.ndarray) -> bytes:
        channels = 1 if image.ndim == 2 else image.shape[2]
        return png_datastream(image.shape[1], image.shape[0], 8, channels, compress(up_filtered(image)))

    return encode


def candidates() -> dict[str, Encoder]:
    import imagecodecs

    f = imagecodecs.PNG.FILTER
    found: dict[str, Encoder] = {
        "pillow level 6 (PIL's default save)": pillow(),
        "pillow level 1 (the writers before)": pillow(compress_level=1),
        "pillow level 1, Z_RLE": pillow(compress_level=1, compress_type=3),
        "pillow level 0 (stored)": pillow(compress_level=0),
        "libpng level 1, adaptive": libpng(level=1),
        "libpng level 1, Paeth": libpng(level=1, filter=f.PAETH),
        "libpng level 1, Up": libpng(level=1, filter=f.UP),
        "libpng level 1, Sub, Z_RLE (OpenCV's fast)": libpng(level=1, filter=f.SUB, strategy=3),
        "libspng level 1": lambda image: imagecodecs.spng_encode(image, level=1),
        "Up + zlib level 1": up_then(lambda s: zlib.compress(s, 1)),
        "Up + zlib-ng level 1": up_then(lambda s: imagecodecs.zlibng_encode(s, level=1)),
        "Up + libdeflate level 1 (ours)": encode_png,
        "Up + libdeflate level 2": up_then(lambda s: deflate(s, level=2)),
        "Up + libdeflate level 4": up_then(lambda s: deflate(s, level=4)),
        "Up + libdeflate level 6": up_then(lambda s: deflate(s, level=6)),
    }
    try:  # OpenCV only where something else installed it (the eval extra does); not a dependency
        import cv2

        def opencv(image: np.ndarray) -> bytes:
            bgr = image[..., ::-1] if image.ndim == 3 else image
            return cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()

        found["opencv level 1"] = opencv
    except ImportError:
        pass
    return found


def load_images(data: Path, n: int) -> dict[str, list[np.ndarray]]:
    from wsi_cosynth.exporters import read_dataset
    from wsi_cosynth.render import label_image

    rgb, labels, masks = [], [], []
    for tile in read_dataset(data, "consep"):
        rgb.append(tile.image)
        labels.append(label_image(tile))
        masks.append(np.where(tile.instances > 0, 255, 0).astype(np.uint8))
        if len(rgb) == n:
            break
    return {"rgb tiles": rgb, "label pictures": labels, "masks": masks}


def decodes_exactly(encoded: list[bytes], images: list[np.ndarray]) -> bool:
    from PIL import Image

    return all(np.array_equal(np.asarray(Image.open(io.BytesIO(b))), a) for b, a in zip(encoded, images))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tiles", type=int, default=432)
    args = ap.parse_args()
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print("load before:", load_before, flush=True)
    sets = load_images(args.data, args.tiles)
    encoders = candidates()
    results: dict[str, dict[str, dict]] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for kind, images in sets.items():
            ms: dict[str, list[float]] = {name: [] for name in encoders}
            per_s: dict[str, list[float]] = {name: [] for name in encoders}
            sizes: dict[str, float] = {}
            exact: dict[str, bool] = {}
            for r in range(args.rounds):
                for name in (list(encoders) if r % 2 == 0 else list(encoders)[::-1]):
                    encode = encoders[name]
                    t0 = time.perf_counter()
                    encoded = [encode(a) for a in images]
                    ms[name].append((time.perf_counter() - t0) / len(images) * 1e3)
                    t0 = time.perf_counter()
                    list(pool.map(encode, images))
                    per_s[name].append(len(images) / (time.perf_counter() - t0))
                    if r == 0:
                        sizes[name] = float(np.mean([len(b) for b in encoded])) / 1024
                        exact[name] = decodes_exactly(encoded, images)
            print(f"\n{kind} ({len(images)} images, {images[0].shape}):")
            print(f"  {'encoder':44s} {'ms/image':>8s} {'2 threads img/s':>15s} {'KiB':>7s}  exact")
            results[kind] = {}
            for name in encoders:
                row = {"ms_per_image": statistics.median(ms[name]), "per_s_2_threads": statistics.median(per_s[name]),
                       "kib": sizes[name], "decodes_exactly": exact[name]}
                results[kind][name] = row
                print(f"  {name:44s} {row['ms_per_image']:8.2f} {row['per_s_2_threads']:15.0f} {row['kib']:7.1f}"
                      f"  {row['decodes_exactly']}", flush=True)
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print("load after:", load_after)
    print(json.dumps({"benchmark": "png_encoding", "source": str(args.data), "rounds": args.rounds, "cpus": os.cpu_count(),
                      "results": results, "load_before": load_before, "load_after": load_after}))


if __name__ == "__main__":
    main()
