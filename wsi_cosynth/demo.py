"""``make demo``: build an annotated demo slide from bundled data, then co-synthesise a COCO
dataset from it with the bundled default model.

The demo slide is the histolytics ``hgsc_nest`` tile (BSD-3-Clause, see
``assets/demo/LICENSE-histolytics.txt``): a 1500 x 1500 H&E image of high-grade serous ovarian
carcinoma at ~0.25 um/px, written here as an Aperio-style pyramidal .svs, with its 1,295 nuclei
(model-made polygons: connective, inflammatory, neoplastic) written as a QuPath GeoJSON sidecar
``demo.geojson`` next to it, so ``wsi-cosynth export --slide demo.svs`` finds it on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from importlib import resources
from pathlib import Path

import numpy as np

DEMO_MPP = 0.25
DEMO_TISSUE = "ovarian"


def _asset(name: str) -> Path:
    return Path(str(resources.files("wsi_cosynth") / "assets" / "demo" / name))


def build_demo_slide(out_dir: str | Path) -> Path:
    """Write ``demo.svs`` and its sidecar ``demo.geojson`` into ``out_dir``; return the slide path."""
    import pyarrow.parquet as pq
    import shapely
    from PIL import Image

    from .atomic import write_text_atomic
    from .slide.writer import write_aperio_svs
    from .taxonomy import get_taxonomy

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image = np.asarray(Image.open(_asset("hgsc_nest.jpg")).convert("RGB"))
    slide = write_aperio_svs(out / "demo.svs", image, mpp=DEMO_MPP, downsamples=(1, 4))

    table = pq.read_table(_asset("hgsc_nest.parquet"))
    geometries = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    names = table.column("class_name").to_pylist()
    taxonomy = get_taxonomy("histolytics")
    rng = np.random.default_rng(0)  # reproducible feature UUIDs
    features = []
    for geometry, name in zip(geometries, names):
        geometry = shapely.make_valid(geometry) if not geometry.is_valid else geometry
        features.append({
            "type": "Feature",
            "id": str(uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63)), version=4)),
            "geometry": json.loads(shapely.to_geojson(shapely.set_precision(geometry, 0.01))),
            "properties": {
                "objectType": "detection",
                "classification": {"name": name, "color": list(taxonomy.color_of(taxonomy.id_of(name)))},
            },
        })
    write_text_atomic(out / "demo.geojson", json.dumps({"type": "FeatureCollection", "features": features}))
    return slide


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wsi_cosynth.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output", help="folder for the demo slide and dataset")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--format", default="coco")
    args = parser.parse_args(argv)

    from .cli import main as cli_main

    start = time.perf_counter()
    out = Path(args.out)
    slide = build_demo_slide(out)
    print(f"demo slide: {slide} (+ {slide.with_suffix('.geojson').name}, {DEMO_MPP} um/px)")
    dataset = out / f"synthetic-{args.format}"
    code = cli_main(["export", "--slide", str(slide), "--format", args.format, "--out", str(dataset),
                     "--tissue", DEMO_TISSUE, "--overwrite", "--restart",
                     *(["--steps", str(args.steps)] if args.steps is not None else [])])
    if code == 0:
        print(f"dataset: {dataset}\npreview: {dataset / 'preview.png'}")
        print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
