"""Pack a labelled tile set, the wheels a bare GPU machine lacks and the demo slide into one
folder (default ``gpu-pack/``, ignored by git) that travels with the working tree to a machine
where ``scripts/gpu_train.sh`` trains on it.

    .venv/bin/python scripts/pack_training_data.py                 # CoNSeP train -> gpu-pack/
    .venv/bin/python scripts/pack_training_data.py --no-wheels --data DIR --format lizard

``gpu-pack/train-pack.npz`` (one compressed .npz, no pickled objects) holds every tile as read by
``wsi_cosynth.exporters.read_dataset``: the image losslessly (the source file's own JPEG/PNG
bytes when they decode to exactly the pixels the reader gave, else a PNG of those pixels; a
SHA-256 of the pixels checks the decode on the other machine), the instance map, the classes,
the name, source, mpp and tissue, plus the taxonomy and the held-out source images. The defaults
(data, mpp, tissue, held-out images) are those the bundled default model was trained with.

``gpu-pack/wheels/``: the project's runtime dependencies that the GPU image does not have, for
CPython 3.12 x86_64 manylinux, at the versions installed here (torch is never downloaded).
``gpu-pack/demo/``: the demo slide (``demo.svs`` + ``demo.geojson``), written here because
writing its JPEG-compressed TIFF needs imagecodecs (a 26 MB wheel), which reading it does not.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PACK_FORMAT = "wsi-cosynth-tile-pack"
PACK_VERSION = 1
DEFAULT_MODEL_JSON = REPO / "wsi_cosynth" / "assets" / "default-model" / "model.json"

# Runtime dependencies (pyproject) missing from the GPU image, with the packages they pull in
# that it lacks too. Not here: torch, numpy, scipy, scikit-image, pillow, tifffile, pyarrow,
# pyyaml, safetensors, tqdm, cloudpickle, toolz, fsspec, msgpack, psutil, sortedcontainers,
# jinja2, click, packaging, urllib3 (all on the image), and imagecodecs (only for writing
# JPEG-compressed TIFFs: the demo slide is written here instead).
GPU_MISSING = (
    "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
    "shapely", "geojson", "openslide-python", "openslide-bin", "pycocotools",
    "dask", "distributed", "partd", "locket", "tornado", "zict", "tblib",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "manylinux_2_5_x86_64")


def pixel_digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image, np.uint8).tobytes()).hexdigest()


def _decode(blob: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as im:
        im.load()
        return np.asarray(im if im.mode == "RGB" else im.convert("RGB"), dtype=np.uint8)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def encode_image(image: np.ndarray, source: str | None) -> tuple[bytes, str]:
    """(bytes, codec) that decode to exactly ``image``: the source file's bytes where they do."""
    if source and Path(source).suffix.lower() in (".jpg", ".jpeg", ".png") and Path(source).is_file():
        blob = Path(source).read_bytes()
        try:
            same = np.array_equal(_decode(blob), image)
        except Exception:  # noqa: BLE001 - any undecodable file falls back to PNG
            same = False
        if same:
            return blob, "png" if blob[:8] == b"\x89PNG\r\n\x1a\n" else "jpeg"
    return _png(image), "png"


def _concat(arrays: list[np.ndarray], dtype) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(arrays) + 1, np.int64)
    offsets[1:] = np.cumsum([a.size for a in arrays])
    flat = np.concatenate([np.asarray(a, dtype).reshape(-1) for a in arrays]) if arrays else np.zeros(0, dtype)
    return flat, offsets


def write_pack(tiles, path: str | Path, *, meta: dict) -> dict:
    """Write LabelledTiles (one taxonomy) to one compressed .npz; returns the pack's metadata."""
    tiles = list(tiles)
    if not tiles:
        raise ValueError("no tiles to pack")
    taxonomy = tiles[0].taxonomy
    blobs, codecs = [], []
    for t in tiles:
        if t.taxonomy.names != taxonomy.names:
            raise ValueError(f"tile {t.provenance.name!r}: taxonomy {t.taxonomy.key!r} differs from {taxonomy.key!r}")
        blob, codec = encode_image(t.image, t.provenance.source)
        blobs.append(np.frombuffer(blob, np.uint8))
        codecs.append(codec)
    n_max = max(int(t.instances.max()) if t.instances.size else 0 for t in tiles)
    inst_dtype = np.uint16 if n_max < 2**16 else np.int32
    image_bytes, image_offsets = _concat(blobs, np.uint8)
    instances, inst_offsets = _concat([t.instances for t in tiles], inst_dtype)
    classes, class_offsets = _concat([t.classes for t in tiles], np.int64)
    arrays = {
        "image_bytes": image_bytes, "image_offsets": image_offsets, "image_codec": np.array(codecs),
        "image_sha256": np.array([pixel_digest(t.image) for t in tiles]),
        "shapes": np.array([t.instances.shape for t in tiles], np.int64),
        "instances": instances, "instance_offsets": inst_offsets,
        "classes": classes, "class_offsets": class_offsets,
        "names": np.array([t.provenance.name for t in tiles]),
        "sources": np.array([t.provenance.source or "" for t in tiles]),
        "tissues": np.array([t.provenance.tissue or "" for t in tiles]),
        "mpps": np.array([np.nan if t.provenance.mpp is None else t.provenance.mpp for t in tiles], np.float64),
    }
    if any(t.distance is not None for t in tiles):
        if not all(t.distance is not None for t in tiles):
            raise ValueError("some tiles have a distance map and some do not")
        arrays["distance"], arrays["distance_offsets"] = _concat([t.distance for t in tiles], np.float32)
    full_meta = {"format": PACK_FORMAT, "version": PACK_VERSION, "n_tiles": len(tiles),
                 "image_codecs": {c: codecs.count(c) for c in sorted(set(codecs))}, **meta}
    arrays["meta_json"] = np.array(json.dumps(full_meta))
    arrays["taxonomy_json"] = np.array(json.dumps(taxonomy.to_dict()))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(out)
    return full_meta


def read_pack(path: str | Path, *, verify: bool = True) -> tuple[list, dict]:
    """(LabelledTiles, metadata) of a pack; ``meta["pixel_mismatches"]`` counts images whose decode
    differs from the packed SHA-256 (another JPEG decoder), 0 when ``verify`` is off or all match."""
    from wsi_cosynth.records import LabelledTile, Provenance
    from wsi_cosynth.taxonomy import Taxonomy

    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(str(data["meta_json"]))
    if meta.get("format") != PACK_FORMAT:
        raise ValueError(f"{path} is not a {PACK_FORMAT} file")
    taxonomy = Taxonomy.from_dict(json.loads(str(data["taxonomy_json"])))
    io_, ii, ci = data["image_offsets"], data["instance_offsets"], data["class_offsets"]
    di = data.get("distance_offsets")
    tiles, mismatches = [], 0
    for k, name in enumerate(data["names"]):
        h, w = (int(v) for v in data["shapes"][k])
        image = _decode(data["image_bytes"][io_[k]:io_[k + 1]].tobytes())
        if verify and pixel_digest(image) != str(data["image_sha256"][k]):
            mismatches += 1
        mpp = float(data["mpps"][k])
        tiles.append(LabelledTile(
            image=image,
            instances=data["instances"][ii[k]:ii[k + 1]].reshape(h, w).astype(np.int32),
            classes=data["classes"][ci[k]:ci[k + 1]].astype(np.int64),
            taxonomy=taxonomy,
            provenance=Provenance(name=str(name), source=str(data["sources"][k]) or None,
                                  mpp=None if np.isnan(mpp) else mpp, tissue=str(data["tissues"][k]) or None),
            distance=None if di is None else data["distance"][di[k]:di[k + 1]].reshape(h, w),
        ))
    meta["pixel_mismatches"] = mismatches
    return tiles, meta


def download_wheels(dest: Path, names=GPU_MISSING, python_version: str = "3.12") -> list[Path]:
    """``pip download`` each name at the version installed here, binary wheels for CPython
    ``python_version`` on x86_64 manylinux, without dependencies (each one is named)."""
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", "-d", str(dest), "--quiet"]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd + pins, check=True)
    return sorted(dest.glob("*.whl"))


def default_training_data() -> dict:
    """Data path, format, mpp, tissue and held-out images the bundled default model was trained with."""
    meta = json.loads(DEFAULT_MODEL_JSON.read_text())
    data = meta.get("data", {})
    path = Path(data.get("path", ""))
    if not path.is_dir():
        path = REPO.parent / "shared" / "data" / "consep" / "train"
    return {"path": str(path), "format": data.get("format", "consep"), "mpp": data.get("mpp", meta.get("mpp")),
            "tissue": data.get("tissue"), "holdout_images": list(data.get("holdout_images", []))}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def travelling_size(carried: Path) -> int:
    """Bytes that travel to the device machine: tracked and untracked-not-ignored files of the
    working tree, plus the carried folder (the limit is 64 MiB in all)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((REPO / f.decode()).stat().st_size for f in listed if f and (REPO / f.decode()).is_file())
    return tree + _size(carried)


def main(argv: list[str] | None = None) -> int:
    d = default_training_data()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=d["path"], help="dataset directory (default: %(default)s)")
    p.add_argument("--format", default=d["format"], help="reader format (default: %(default)s)")
    p.add_argument("--mpp", type=float, default=d["mpp"], help="um/px where the reader records none (default: %(default)s)")
    p.add_argument("--tissue", default=d["tissue"], help="tissue type for the prompts (default: %(default)s)")
    p.add_argument("--holdout-images", default=",".join(d["holdout_images"]),
                   help="comma-separated source images held out for validation (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="pack only the first N tiles")
    p.add_argument("--out", default=str(REPO / "gpu-pack"), help="pack folder (default: %(default)s)")
    p.add_argument("--no-wheels", action="store_true", help="do not download wheels")
    p.add_argument("--no-demo", action="store_true", help="do not write the demo slide")
    args = p.parse_args(argv)

    from wsi_cosynth.exporters import read_dataset

    out = Path(args.out)
    start = time.perf_counter()
    tiles = []
    for tile in read_dataset(args.data, args.format):
        if args.mpp is not None and tile.provenance.mpp is None:
            from dataclasses import replace
            tile = replace(tile, provenance=replace(tile.provenance, mpp=args.mpp))
        tiles.append(tile)
        if args.limit and len(tiles) >= args.limit:
            break
    holdout = [h.strip() for h in args.holdout_images.split(",") if h.strip()]
    meta = write_pack(tiles, out / "train-pack.npz", meta={
        "data": str(Path(args.data).resolve()), "reader_format": args.format, "mpp": args.mpp,
        "tissue": args.tissue, "holdout_images": holdout, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    print(f"{out / 'train-pack.npz'}: {meta['n_tiles']} tiles ({meta['image_codecs']}), "
          f"{_size(out / 'train-pack.npz') / 2**20:.1f} MiB, {time.perf_counter() - start:.0f} s")
    if not args.no_demo:
        from wsi_cosynth.demo import build_demo_slide

        slide = build_demo_slide(out / "demo")
        print(f"{slide} (+ demo.geojson): {_size(out / 'demo') / 2**20:.1f} MiB")
    if not args.no_wheels:
        wheels = download_wheels(out / "wheels")
        print(f"{out / 'wheels'}: {len(wheels)} wheels, {_size(out / 'wheels') / 2**20:.1f} MiB")
    print(f"{out}: {_size(out) / 2**20:.1f} MiB in all; with the working tree {travelling_size(out) / 2**20:.1f} MiB "
          f"travel (limit 64 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
