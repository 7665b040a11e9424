"""Mutation fuzzing of every reader and entry point, through the CLI's ``main`` in this process.

Each target starts from real inputs (``../shared/data``; small slices of them so a case takes
milliseconds), applies one seeded mutation and runs one command. Every case must end in exit 0
with a valid result (read back and checked) or exit 2 with one line naming a file, and nothing
half-written; a traceback is a crash, exit 0 for a mutation that is damage by construction (a
truncated file, invalid UTF-8, non-finite coordinates under ``--strict-geometry``) is a silent
acceptance. The default suite runs ``FUZZ_CASES`` cases (a few thousand); ``-m slow`` runs
``FUZZ_CASES_SLOW`` (>= 20,000) and prints the per-reader table kept in benchmarks/README.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from conftest import DATA_ROOT
from fuzzing import (
    BYTE_MUTATORS,
    Tally,
    dumps,
    mutate_array,
    mutate_json,
    no_partial_output,
    run_cli,
    tree_bytes,
    write_tree,
)

pytestmark = pytest.mark.filterwarnings("ignore")

FUZZ_CASES = int(os.environ.get("WSI_COSYNTH_FUZZ_CASES", "2500"))
# The default suite stops early when the machine is so loaded that the cases would take longer.
FUZZ_SECONDS = float(os.environ.get("WSI_COSYNTH_FUZZ_SECONDS", "80"))
FUZZ_CASES_SLOW = int(os.environ.get("WSI_COSYNTH_FUZZ_CASES_SLOW", "20000"))
FUZZ_MEMORY_BYTES = 8 << 30

ANY, REJECT = "any", "reject"


@dataclass
class Case:
    """One prepared fuzz case: the command, what must happen, and how to check a success."""

    argv: list[str]
    expect: str  # ANY or REJECT
    out: Path | None  # output the command writes (checked on success, must be absent on failure)
    check: Callable[[Path], None] | None = None


# ----------------------------------------------------------------------------------------- seeds
def _need(*parts: str) -> Path:
    p = DATA_ROOT.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p}")
    return p


def _npy_bytes(a: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle or np.asarray(a).dtype == object)
    return buf.getvalue()


def _mat_bytes(d: dict) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, d)
    return buf.getvalue()


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class Seeds:
    """Real inputs of every reader, sliced small, as ``{relative path: bytes}`` trees."""

    def __init__(self, root: Path) -> None:
        self.root = root
        consep = _need("consep", "train")
        stem = "train_10_000"
        inst = np.load(consep / "inst" / f"{stem}.npy")
        mat = {k: v for k, v in scipy.io.loadmat(consep / "type_mat" / f"{stem}.mat").items() if not k.startswith("__")}
        self.consep = {"images/t.jpg": (consep / "images" / f"{stem}.jpg").read_bytes(),
                       "inst/t.npy": _npy_bytes(inst), "type_mat/t.mat": _mat_bytes(mat)}
        self.consep_arrays = {"inst": inst, "mat": mat}
        hn = _need("formats", "hovernet")
        gt = {k: v for k, v in scipy.io.loadmat(hn / "cellseg_models_patch1_consep_style_gt.mat").items()
              if not k.startswith("__")}
        image = np.asarray(self._jpeg(consep / "images" / f"{stem}.jpg"))
        self.consep_mat = {"images/t.png": _png_bytes(image), "labels/t.mat": _mat_bytes(gt)}
        self.consep_mat_arrays = gt
        self.hovernet = {"json/t.json": (hn / "DERIVED_hovernet_tile_output.json").read_bytes(),
                         "type_info.json": (hn / "hover_net_type_info.json").read_bytes(),
                         "images/t.png": _png_bytes(image)}
        nucls = _need("nucls", "train")
        nstem = sorted(p.stem for p in (nucls / "images").glob("*.png"))[0]
        self.cellvit = {"images/t.png": (nucls / "images" / f"{nstem}.png").read_bytes(),
                        "labels/t.npy": (nucls / "labels" / f"{nstem}.npy").read_bytes(),
                        "label_map.yaml": _need("nucls", "label_map.yaml").read_bytes()}
        self.cellvit_label = np.load(nucls / "labels" / f"{nstem}.npy", allow_pickle=True).item()
        # Written datasets: the package's own writers applied to the real CoNSeP tile.
        src = write_tree(root / "consep-src", self.consep)
        for fmt in ("lizard", "pannuke", "coco", "geojson"):
            out = root / f"seed-{fmt}"
            res = run_cli(["convert", str(src), str(out), "--from", "consep", "--to", fmt, "--quiet"])
            assert res.rc == 0, res.stderr
            setattr(self, fmt, tree_bytes(out))
        # Evaluation inputs: two-tile COCO (synthetic) and PanNuke (real) sets and a class map.
        two = dict(self.consep)
        two.update({"images/u.jpg": (consep / "images" / "train_10_001.jpg").read_bytes(),
                    "inst/u.npy": _npy_bytes(np.load(consep / "inst" / "train_10_001.npy")),
                    "type_mat/u.mat": (consep / "type_mat" / "train_10_001.mat").read_bytes()})
        src2 = write_tree(root / "consep-two", two)
        for fmt in ("coco", "pannuke"):
            out = root / f"two-{fmt}"
            assert run_cli(["convert", str(src2), str(out), "--from", "consep", "--to", fmt, "--quiet"]).rc == 0
            setattr(self, f"eval_{fmt}", tree_bytes(out))
        self.class_map = b"other: other\ninflammatory: inflammatory\nepithelial: epithelial\nspindle: spindle\n"
        # Slide annotations: the first regions of a real MoNuSAC XML on its real slide, and the
        # same outlines as QuPath GeoJSON, HoVer-Net WSI JSON and GeoParquet.
        self.slide = _need("monusac", "A9K0_1.svs")
        xml = ET.parse(_need("monusac", "A9K0_1.xml")).getroot()
        for annotation in xml.findall("./Annotation"):
            regions = annotation.find("./Regions")
            if regions is not None:
                for region in regions.findall("./Region")[12:]:
                    regions.remove(region)
        self.aperio = ET.tostring(xml)
        from wsi_cosynth.annotations.aperio_xml import read_aperio_xml

        table = read_aperio_xml(write_tree(root / "xml", {"a.xml": self.aperio}) / "a.xml")
        rings = [np.asarray(g.exterior.coords).round(1).tolist() for g in table.nuclei]
        names = [str(c) for c in table.classes]
        self.qupath = dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [r]},
             "properties": {"objectType": "detection", "classification": {"name": n}}} for r, n in zip(rings, names)]})
        types = {n: i + 1 for i, n in enumerate(sorted(set(names)))}
        self.hovernet_names = {i: n for n, i in types.items()}
        self.hovernet_wsi = dumps({"mag": None, "nuc": {str(i + 1): {
            "contour": np.asarray(r[:-1]).round().astype(int).tolist(), "type": types[n],
            "centroid": np.asarray(r).mean(axis=0).tolist()} for i, (r, n) in enumerate(zip(rings, names))}})
        self.parquet = self._parquet(table)
        self.svs = _need("slides", "CMU-1-Small-Region.svs").read_bytes()
        self.dicom = _need("slides", "small_dicom.dcm").read_bytes()
        # Plain-image slides: the real CoNSeP tile as PNG, JPEG and strip TIFF.
        import tifffile

        buf = io.BytesIO()
        tifffile.imwrite(buf, image, rowsperstrip=32, compression="zlib")
        self.plain = {"png": _png_bytes(image), "jpg": self.consep["images/t.jpg"], "tif": buf.getvalue()}
        self.tiny_slide = self.plain["tif"]
        self.checkpoint = self._tiny_checkpoint(root / "ckpt")
        self.detector = self._tiny_detector(root / "det")
        self.layout_model = (Path(__file__).resolve().parents[1] / "wsi_cosynth" / "assets"
                             / "layout-model-consep.json").read_bytes()
        self.config = (Path(__file__).resolve().parents[1] / "wsi_cosynth" / "configs" / "tiny.yaml").read_bytes()

    @staticmethod
    def _tiny_checkpoint(folder: Path) -> dict[str, bytes]:
        import torch

        from wsi_cosynth.models.config import load_config
        from wsi_cosynth.models.cosynth import CosynthModel
        from wsi_cosynth.taxonomy import get_taxonomy
        from wsi_cosynth.training.checkpoint import save_checkpoint

        torch.manual_seed(0)
        model = CosynthModel(load_config("tiny"), get_taxonomy("consep"), mpp=1.0, tile_size=32)
        return tree_bytes(save_checkpoint(folder / "m", model, steps=0))

    @staticmethod
    def _tiny_detector(folder: Path) -> dict[str, bytes]:
        import torch

        from wsi_cosynth.detection import Detector
        from wsi_cosynth.detection.segmenter import SegmenterNet
        from wsi_cosynth.taxonomy import get_taxonomy

        torch.manual_seed(0)
        net = SegmenterNet(1, (4, 8))
        return tree_bytes(Detector(net.eval(), get_taxonomy("nucleus"), mpp=0.5, widths=(4, 8)).save(folder / "d"))

    @staticmethod
    def _jpeg(path: Path) -> np.ndarray:
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    @staticmethod
    def _parquet(table) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq
        import shapely

        t = pa.table({"geometry": pa.array(shapely.to_wkb(table.nuclei).tolist(), type=pa.binary()),
                      "class_name": [str(c) for c in table.classes]})
        t = t.replace_schema_metadata({b"geo": json.dumps({"primary_column": "geometry"}).encode()})
        buf = io.BytesIO()
        pq.write_table(t, buf)
        return buf.getvalue()


# ----------------------------------------------------------------------------------------- checks
def _check_dataset(fmt: str) -> Callable[[Path], None]:
    def check(out: Path) -> None:
        from wsi_cosynth.exporters import read_dataset

        tiles = list(read_dataset(out, fmt))
        for t in tiles:
            assert t.image.dtype == np.uint8 and t.image.ndim == 3
            assert t.instances.shape == t.image.shape[:2] and t.instances.dtype == np.int32
            assert t.instances.max(initial=0) == len(t.classes)
            if len(t.classes):
                assert t.classes.min() >= 1 and t.classes.max() <= t.taxonomy.n_classes

    return check


def _check_tiles(out: Path) -> None:
    files = list(out.iterdir())
    assert any(p.suffix == ".csv" or p.suffix == ".json" for p in files), files


def _byte_mutation(files: dict[str, bytes], rng: np.random.Generator, keys: list[str] | None = None
                   ) -> tuple[dict[str, bytes], str]:
    """Mutate one file's bytes; REJECT when the mutation always damages the file."""
    keys = keys or sorted(files)
    key = keys[int(rng.integers(len(keys)))]
    name = sorted(BYTE_MUTATORS)[int(rng.integers(len(BYTE_MUTATORS)))]
    data = files[key]
    new = BYTE_MUTATORS[name](data, rng)
    files = dict(files, **{key: new})
    expect = ANY
    if name == "truncate" and new.rstrip() != data.rstrip():
        # CSV and YAML have no end marker: a cut file may be shorter, not detectably damaged.
        expect = ANY if key.endswith((".csv", ".yaml")) else REJECT
    if name == "latin1" and key.endswith((".json", ".geojson", ".csv", ".yaml", ".xml")):
        expect = REJECT
    return files, expect


def _json_mutation(files: dict[str, bytes], key: str, rng: np.random.Generator) -> dict[str, bytes]:
    data = json.loads(files[key])
    for _ in range(int(rng.integers(1, 3))):
        data = mutate_json(data, rng)
    return dict(files, **{key: dumps(data)})


# ----------------------------------------------------------------------------------------- targets
def _convert_case(work: Path, files: dict[str, bytes], fmt: str, expect: str, *extra: str) -> Case:
    src = write_tree(work / "src", files)
    out = work / "out"
    return Case(["convert", str(src), str(out), "--from", fmt, "--to", "pannuke", "--quiet", *extra],
                expect, out, _check_dataset("pannuke"))


def t_consep(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    files, expect = dict(seeds.consep), ANY
    op = int(rng.integers(4))
    if op == 0:
        files, expect = _byte_mutation(files, rng)
    elif op == 1:
        files["inst/t.npy"] = _npy_bytes(mutate_array(seeds.consep_arrays["inst"], rng))
    elif op == 2:
        mat = dict(seeds.consep_arrays["mat"])
        key = sorted(mat)[int(rng.integers(len(mat)))]
        if rng.random() < 0.2:
            del mat[key]
        else:
            mat[key] = mutate_array(mat[key], rng)
        files["type_mat/t.mat"] = _mat_bytes(mat)
    else:  # structure: a missing or extra member of a pair, a non-file where a file is expected
        key = sorted(files)[int(rng.integers(len(files)))]
        del files[key]
        expect = REJECT
    return _convert_case(work, files, "consep", expect)


def t_consep_mat(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    files, expect = dict(seeds.consep_mat), ANY
    if rng.random() < 0.4:
        files, expect = _byte_mutation(files, rng)
    else:
        mat = dict(seeds.consep_mat_arrays)
        key = sorted(mat)[int(rng.integers(len(mat)))]
        mat[key] = mutate_array(mat[key], rng)
        files["labels/t.mat"] = _mat_bytes(mat)
    return _convert_case(work, files, "consep", expect)


def t_cellvit(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    files, expect = dict(seeds.cellvit), ANY
    op = int(rng.integers(3))
    if op == 0:
        files, expect = _byte_mutation(files, rng)
    elif op == 1:
        label = dict(seeds.cellvit_label)
        key = sorted(label)[int(rng.integers(len(label)))]
        label[key] = mutate_array(label[key], rng)
        files["labels/t.npy"] = _npy_bytes(np.array(label, dtype=object), allow_pickle=True)
    else:
        lines = files["label_map.yaml"].decode().splitlines()
        i = int(rng.integers(len(lines)))
        lines[i] = str(rng.choice(["0: x", "- [", "1: ", "x: y", "1: {a: b}", "{", "2: Tumor", "3: Tumor"]))
        files["label_map.yaml"] = "\n".join(lines).encode()
    return _convert_case(work, files, "cellvit", expect)


def t_hovernet_json(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    files, expect = dict(seeds.hovernet), ANY
    op = int(rng.integers(4))
    if op == 0:
        files, expect = _byte_mutation(files, rng)
    elif op == 1:
        files = _json_mutation(files, "type_info.json", rng)
    else:
        files = _json_mutation(files, "json/t.json", rng)
    return _convert_case(work, files, "hovernet-json", expect)


def _dataset_target(fmt: str, json_keys: tuple[str, ...]) -> Callable[[Seeds, np.random.Generator, Path], Case]:
    def target(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
        files, expect = dict(getattr(seeds, fmt)), ANY
        keys = [k for k in files if k.endswith(json_keys)] if json_keys else []
        if keys and rng.random() < 0.6:
            files = _json_mutation(files, keys[int(rng.integers(len(keys)))], rng)
        elif fmt == "pannuke" and rng.random() < 0.5:
            key = str(rng.choice(["images.npy", "masks.npy", "types.npy"]))
            a = np.load(io.BytesIO(files[key]))
            files[key] = _npy_bytes(mutate_array(a, rng))
        elif fmt == "lizard" and rng.random() < 0.5:
            key = next(k for k in files if k.endswith(".mat"))
            mat = {k: v for k, v in scipy.io.loadmat(io.BytesIO(files[key])).items() if not k.startswith("__")}
            name = sorted(mat)[int(rng.integers(len(mat)))]
            mat[name] = mutate_array(mat[name], rng)
            files[key] = _mat_bytes(mat)
        else:
            files, expect = _byte_mutation(files, rng)
        return _convert_case(work, files, fmt, expect)

    return target


def _export_case(seeds: Seeds, work: Path, name: str, data: bytes, expect: str, strict: bool) -> Case:
    ann = work / name
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_bytes(data)
    out = work / "out"
    argv = ["export", "--source", "real", "--slide", str(seeds.slide), "--annotations", str(ann), "--format",
            "pannuke", "--mpp", "1.0", "--tile-size", "128", "--min-tissue", "0", "--out", str(out), "--no-progress"]
    if name.endswith(".json"):  # HoVer-Net types are numbers: name them for the MoNuSAC classes
        (work / "map.yaml").write_text("".join(f"type_{k}: {v}\n" for k, v in seeds.hovernet_names.items()))
        argv += ["--taxonomy", "monusac", "--class-map", str(work / "map.yaml")]
    return Case(argv + (["--strict-geometry"] if strict else []), expect, out, _check_dataset("pannuke"))


_BAD_NUMBERS = (float("nan"), float("inf"), -float("inf"), 1e300, -1e300)


def _poison_coordinates(data: object, rng: np.random.Generator) -> object:
    """Set one number inside a coordinate list to NaN/Inf/+-1e300."""
    paths = []

    def walk(node, path):
        if isinstance(node, list) and len(node) == 2 and all(isinstance(v, (int, float)) for v in node):
            paths.append(path)
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, path + (i,))

    walk(data, ())
    path = paths[int(rng.integers(len(paths)))]
    node = data
    for p in path:
        node = node[p]
    node[int(rng.integers(2))] = float(rng.choice(_BAD_NUMBERS))
    return data


def _annotation_json_target(attr: str, name: str):
    def target(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
        data = getattr(seeds, attr)
        op = int(rng.integers(3))
        if op == 0:
            files, expect = _byte_mutation({name: data}, rng)
            return _export_case(seeds, work, name, files[name], expect, strict=False)
        if op == 1:  # damage by construction: one poisoned coordinate, strict mode
            return _export_case(seeds, work, name, dumps(_poison_coordinates(json.loads(data), rng)), REJECT, strict=True)
        return _export_case(seeds, work, name, dumps(mutate_json(json.loads(data), rng)), ANY, strict=False)

    return target


def t_aperio(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    op = int(rng.integers(3))
    if op == 0:
        files, expect = _byte_mutation({"a.xml": seeds.aperio}, rng)
        return _export_case(seeds, work, "a.xml", files["a.xml"], expect, strict=False)
    root = ET.fromstring(seeds.aperio)
    vertices = root.findall(".//Vertex")
    regions = root.findall(".//Region")
    if op == 1:
        v = vertices[int(rng.integers(len(vertices)))]
        v.set(str(rng.choice(["X", "Y"])), str(rng.choice(["nan", "inf", "-inf", "1e300", "-1e300"])))
        return _export_case(seeds, work, "a.xml", ET.tostring(root), REJECT, strict=True)
    node = [vertices, regions, root.findall(".//Annotation")][int(rng.integers(3))]
    el = node[int(rng.integers(len(node)))]
    key = str(rng.choice(list(el.attrib) or ["X"]))
    el.set(key, str(rng.choice(["", "x", "-1", "0", "2", "1e30", "nan", "3.5", "\u00e9"])))
    if rng.random() < 0.3:
        for child in list(el):
            el.remove(child)
    return _export_case(seeds, work, "a.xml", ET.tostring(root), ANY, strict=False)


def t_geoparquet(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    files, expect = _byte_mutation({"a.parquet": seeds.parquet}, rng)
    return _export_case(seeds, work, "a.parquet", files["a.parquet"], expect, strict=False)


def _slide_case(work: Path, name: str, data: bytes, expect: str, *, mpp: str = "8", slide_mpp: str = "0.5") -> Case:
    slide = work / name
    slide.parent.mkdir(parents=True, exist_ok=True)
    slide.write_bytes(data)
    out = work / "out"
    return Case(["tiles", "--slide", str(slide), "--out", str(out), "--mpp", mpp, "--tile-size", "64",
                 "--min-tissue", "0", "--slide-mpp", slide_mpp, "--no-progress"], expect, out, _check_tiles)


def t_slide_svs(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    op = int(rng.integers(5))
    if op == 0:
        return _slide_case(work, "s.svs", b"", REJECT)
    if op == 1:
        return _slide_case(work, "s.svs", seeds.consep["images/t.jpg"], ANY)  # a renamed JPEG
    files, expect = _byte_mutation({"s.svs": seeds.svs}, rng)
    return _slide_case(work, "s.svs", files["s.svs"], expect)


def t_slide_dicom(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    files, expect = _byte_mutation({"s.dcm": seeds.dicom}, rng)
    return _slide_case(work, "s.dcm", files["s.dcm"], expect)


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def t_slide_plain(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    kind = str(rng.choice(sorted(seeds.plain)))
    if rng.random() < 0.05:  # a header claiming 60000 x 60000 px
        return _slide_case(work, "s.png", _png_header(60000, 60000), REJECT, mpp="1", slide_mpp="0.25")
    files, expect = _byte_mutation({f"s.{kind}": seeds.plain[kind]}, rng)
    if kind == "jpg" and expect == REJECT and len(files[f"s.{kind}"]) > len(seeds.plain[kind]) - 3:
        expect = ANY  # a JPEG cut inside its end marker still decodes every pixel
    return _slide_case(work, f"s.{kind}", files[f"s.{kind}"], expect, mpp="1", slide_mpp="0.25")


def _checkpoint_case(seeds: Seeds, work: Path, files: dict[str, bytes], expect: str) -> Case:
    model = write_tree(work / "model", files)
    slide = work / "s.tif"
    slide.write_bytes(seeds.tiny_slide)
    out = work / "out"
    return Case(["export", "--slide", str(slide), "--slide-mpp", "0.25", "--model", str(model), "--format", "pannuke",
                 "--out", str(out), "--steps", "1", "--max-tiles", "1", "--guidance", "1", "--tissue", "colon",
                 "--threads", "1", "--min-tissue", "0", "--no-progress"], expect, out, _check_dataset("pannuke"))


def t_checkpoint(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    """model.json mutated, or the weights' bytes (a flipped weight byte is detectable only as NaN/Inf)."""
    if rng.random() < 0.5:
        return _checkpoint_case(seeds, work, _json_mutation(dict(seeds.checkpoint), "model.json", rng), ANY)
    files, expect = _byte_mutation(dict(seeds.checkpoint), rng, keys=["model.safetensors"])
    return _checkpoint_case(seeds, work, files, expect)


def _evaluate_case(work: Path, synthetic: dict[str, bytes], real: dict[str, bytes], class_map: bytes,
                   expect: str) -> Case:
    syn, ref = write_tree(work / "syn", synthetic), write_tree(work / "real", real)
    (work / "map.yaml").write_bytes(class_map)
    out = work / "report"
    return Case(["evaluate", "--real", str(ref), "--real-format", "pannuke", "--synthetic", str(syn),
                 "--synthetic-format", "coco", "--class-map", str(work / "map.yaml"), "--out", str(out), "--quiet"],
                expect, out, lambda p: json.loads((p / "report.json").read_text()))


def t_evaluate(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    synthetic, real, class_map, expect = dict(seeds.eval_coco), dict(seeds.eval_pannuke), seeds.class_map, ANY
    op = int(rng.integers(3))
    if op == 0:
        synthetic = _json_mutation(synthetic, "annotations.json", rng)
    elif op == 1:
        real, expect = _byte_mutation(real, rng)
    else:
        files, expect = _byte_mutation({"map.yaml": class_map}, rng)
        class_map = files["map.yaml"]
    return _evaluate_case(work, synthetic, real, class_map, expect)


def t_layout_model(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    if rng.random() < 0.3:
        files, expect = _byte_mutation({"m.json": seeds.layout_model}, rng)
        data = files["m.json"]
    else:
        data, expect = dumps(mutate_json(json.loads(seeds.layout_model), rng)), ANY
    model = work / "m.json"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(data)
    out = work / "layouts.json"
    return Case(["layouts", "sample", "--model", str(model), "-n", "1", "--size", "64", "64", "--out", str(out)],
                expect, out, lambda p: json.loads(p.read_text()))


def t_config(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    import yaml

    # Every case expects ANY: a truncated or byte-flipped YAML may still be a valid config (cut at
    # a line end, a flipped comment), and then the missing --data below is what refuses it.
    if rng.random() < 0.3:
        text = _byte_mutation({"c.yaml": seeds.config}, rng)[0]["c.yaml"]
    else:
        data = mutate_json(json.loads(json.dumps(yaml.safe_load(seeds.config))), rng)
        text = yaml.safe_dump(data).encode() if not isinstance(data, float) else b"nan"
    cfg = work / "c.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_bytes(text)
    # --data names no directory: a config that parses is refused right after, so no training runs.
    return Case(["train", "--config", str(cfg), "--data", str(work / "missing"), "--out", str(work / "run"),
                 "--no-progress"], ANY, None)


def _tile_nuclei_geojson(seeds: Seeds) -> bytes:
    """The real CoNSeP tile's nuclei as QuPath detections (bounding boxes, class epithelial), once."""
    if not hasattr(seeds, "tile_geojson"):
        inst = seeds.consep_arrays["inst"].astype(np.int64)
        features = []
        for i in range(1, int(inst.max()) + 1):
            rows, cols = np.nonzero(inst == i)
            if len(rows):
                x0, y0, x1, y1 = float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)
                features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
                    [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
                    "properties": {"objectType": "detection", "classification": {"name": "epithelial"}}})
        seeds.tile_geojson = dumps({"type": "FeatureCollection", "features": features})
    return seeds.tile_geojson


def _check_synthetic_slide(out: Path) -> None:
    import openslide

    (slide,) = out.glob("*.synthetic.tif")
    with openslide.OpenSlide(str(slide)) as s:
        assert min(s.dimensions) > 0
    features = json.loads(next(out.glob("*.synthetic.geojson")).read_text())["features"]
    assert all(f["geometry"]["type"] == "Polygon" for f in features)


def _synthesize_case(seeds: Seeds, work: Path, annotations: bytes, region: list[int] | None, expect: str) -> Case:
    slide = work / "s.tif"
    slide.parent.mkdir(parents=True, exist_ok=True)
    slide.write_bytes(seeds.tiny_slide)
    (work / "a.geojson").write_bytes(annotations)
    model = write_tree(work / "model", seeds.checkpoint)
    out = work / "out"
    # The tile's saturation is below the tissue detector's floor: the region is given.
    extra = ["--region", *(str(v) for v in (region if region is not None else (0, 0, 256, 256)))]
    return Case(["synthesize", "--slide", str(slide), "--slide-mpp", "0.25", "--annotations", str(work / "a.geojson"),
                 "--model", str(model), "--out", str(out), "--steps", "1", "--guidance", "1", "--threads", "1",
                 "--no-progress", *extra], expect, out, _check_synthetic_slide)


def t_synthesize(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    """Region synthesis: mutated annotations, or hostile --region values."""
    ann = _tile_nuclei_geojson(seeds)
    op = int(rng.integers(3))
    if op == 0:
        return _synthesize_case(seeds, work, _json_mutation({"a": ann}, "a", rng)["a"], None, ANY)
    if op == 1:
        files, expect = _byte_mutation({"a.geojson": ann}, rng)
        return _synthesize_case(seeds, work, files["a.geojson"], None, expect)
    values = [-1, 0, 1, 3, 64, 200, 255, 256, 257, 2**31, -(2**31)]
    region = [int(values[int(i)]) for i in rng.integers(len(values), size=4)]
    x, y, w, h = region
    inside = x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 256 and y + h <= 256
    return _synthesize_case(seeds, work, ann, region, ANY if inside else REJECT)


def _check_detections(out: Path) -> None:
    features = json.loads(out.read_text())["features"]
    assert all(f["geometry"]["type"] == "Polygon" and 0 < f["properties"]["measurements"]["Detection confidence"] <= 1
               for f in features)


def t_detect(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    """``detect``: the detector's files mutated (its JSON as data or as bytes, its weights' bytes)."""
    files, expect = dict(seeds.detector), ANY
    op = int(rng.integers(3))
    if op == 0:
        files = _json_mutation(files, "detector.json", rng)
    elif op == 1:
        files, expect = _byte_mutation(files, rng, keys=["detector.json"])
    else:
        files, expect = _byte_mutation(files, rng, keys=["detector.safetensors"])
        expect = ANY  # a flipped weight byte is a valid (different) detector
    return _detect_case(seeds, work, files, expect)


def _detect_case(seeds: Seeds, work: Path, files: dict[str, bytes], expect: str) -> Case:
    detector = write_tree(work / "det", files)
    slide = work / "s.tif"
    slide.write_bytes(seeds.tiny_slide)
    out = work / "out.geojson"
    return Case(["detect", "--slide", str(slide), "--slide-mpp", "0.25", "--detector", str(detector), "--out", str(out),
                 "--window", "64", "--min-tissue", "0", "--threads", "1", "--no-progress"], expect, out,
                _check_detections)


SOURCES_YAML = (b"balance: sqrt\nholdout_images: []\nsources:\n  - name: consep\n    data: consep\n    format: consep\n"
                b"    mpp: 0.25\n    tissue_table: organs.csv\n")
ORGANS_CSV = b"image,organ,project\nt,colon,TCGA-COAD\n"


def _sources_case(seeds: Seeds, work: Path, files: dict[str, bytes], expect: str, *, train: bool = False) -> Case:
    write_tree(work, {**{f"consep/{k}": v for k, v in seeds.consep.items()}, **files})
    # A held-out image no source has stops the command once every source is read: no training.
    stop = [] if train else ["--holdout-images", "zz_no_such_image"]
    return Case(["train", "--config", "tiny", "--sources", str(work / "s.yaml"), "--out", str(work / "run"),
                 "--steps", "1", "--threads", "1", "--no-progress", *stop], expect, None)


def t_train_sources(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    """The sources YAML of ``train --sources`` (as bytes or as data) or its tissue table CSV."""
    import yaml

    files = {"s.yaml": SOURCES_YAML, "organs.csv": ORGANS_CSV}
    op = rng.random()
    if op < 0.35:
        files = _byte_mutation(files, rng, keys=["s.yaml"])[0]
    elif op < 0.7:
        data = mutate_json(json.loads(json.dumps(yaml.safe_load(SOURCES_YAML))), rng)
        files["s.yaml"] = yaml.safe_dump(data).encode() if not isinstance(data, float) else b"nan"
    else:
        files = _byte_mutation(files, rng, keys=["organs.csv"])[0]
    return _sources_case(seeds, work, files, ANY)


def _cohort_csv(seeds: Seeds, work: Path) -> bytes:
    """A cohort of the real MoNuSAC slide with its (sliced) XML, and the plain CoNSeP tile, which
    has no annotations and so fails as a bad slide of a real export."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "a.xml").write_bytes(seeds.aperio)
    (work / "t.tif").write_bytes(seeds.tiny_slide)
    return (f"slide,annotations,patient,tissue,slide_mpp,split\n{seeds.slide},a.xml,P1,colon,,train\n"
            f"t.tif,,P2,colon,0.25,\n").encode()


def _check_cohort(out: Path) -> None:
    import csv as csv_module

    rows = list(csv_module.DictReader(io.StringIO((out / "cohort.csv").read_text())))
    assert rows and all(r["status"] == "ok" or r["status"].startswith("failed: ") for r in rows)
    for split in ("train", "val", "test"):
        if any(r["split"] == split and r["status"] == "ok" for r in rows):
            _check_dataset("pannuke")(out / split)


def _cohort_case(work: Path, data: bytes, expect: str) -> Case:
    (work / "c.csv").write_bytes(data)
    out = work / "out"
    return Case(["export", "--cohort", str(work / "c.csv"), "--source", "real", "--format", "pannuke", "--mpp", "1.0",
                 "--tile-size", "128", "--min-tissue", "0", "--out", str(out), "--no-progress", "--skip-bad-slides"],
                expect, out, _check_cohort)


def t_cohort_csv(seeds: Seeds, rng: np.random.Generator, work: Path) -> Case:
    """The cohort CSV of ``export --cohort``: its bytes, or hostile cells, rows and headers."""
    data = _cohort_csv(seeds, work)
    if rng.random() < 0.5:
        files, expect = _byte_mutation({"c.csv": data}, rng)
        return _cohort_case(work, files["c.csv"], expect)
    lines = data.decode().splitlines()
    cells = [line.split(",") for line in lines]
    r, c = int(rng.integers(len(cells))), int(rng.integers(len(cells[0])))
    op = int(rng.integers(3))
    if op == 0:
        cells[r][c] = str(rng.choice(["", "0", "-1", "nan", "inf", "1e400", "x", "0.25", "Test", "val", "\"q\"",
                                      "missing.svs", ".", "a.xml", "t.tif", " "]))
    elif op == 1:
        cells.insert(int(rng.integers(1, len(cells) + 1)), list(cells[int(rng.integers(len(cells)))]))
    else:
        del cells[r][c]
    return _cohort_case(work, "\n".join(",".join(row) for row in cells).encode(), ANY)


TARGETS: dict[str, Callable[[Seeds, np.random.Generator, Path], Case]] = {
    "consep": t_consep,
    "consep-mat": t_consep_mat,
    "cellvit": t_cellvit,
    "hovernet-json": t_hovernet_json,
    "lizard": _dataset_target("lizard", (".json",)),
    "pannuke": _dataset_target("pannuke", (".json",)),
    "coco": _dataset_target("coco", (".json",)),
    "geojson": _dataset_target("geojson", (".json", ".geojson")),
    "qupath-geojson": _annotation_json_target("qupath", "a.geojson"),
    "hovernet-wsi": _annotation_json_target("hovernet_wsi", "a.json"),
    "aperio-xml": t_aperio,
    "geoparquet": t_geoparquet,
    "slide-svs": t_slide_svs,
    "slide-dicom": t_slide_dicom,
    "slide-plain": t_slide_plain,
    "checkpoint": t_checkpoint,
    "evaluate": t_evaluate,
    "layout-model": t_layout_model,
    "train-config": t_config,
    "cohort-csv": t_cohort_csv,
    "train-sources": t_train_sources,
    "synthesize": t_synthesize,
    "detect": t_detect,
}
# Relative case counts: slides and exports cost more per case than dataset reads.
WEIGHTS = {"detect": 0.2, "cohort-csv": 0.2, "train-sources": 0.3, "synthesize": 0.1, "evaluate": 0.03, "slide-svs": 0.25, "slide-dicom": 0.2, "slide-plain": 0.5, "checkpoint": 0.3, "qupath-geojson": 0.4,
           "hovernet-wsi": 0.35, "aperio-xml": 0.3, "geoparquet": 0.4}


# ----------------------------------------------------------------------------------------- runner
def run_case(name: str, case: Case, tally: Tally) -> None:
    res = run_cli(case.argv)
    kind = res.kind
    note = f"{case.argv} -> rc {res.rc}: {res.error or res.stderr[-600:]}"
    if kind == "ok" and case.expect == REJECT:
        tally.add(name, "silent", note)
        return
    if kind == "ok" and case.check is not None and case.out is not None:
        try:
            case.check(case.out)
        except Exception as exc:  # noqa: BLE001 - an invalid result is what this looks for
            tally.add(name, "silent", f"{note}; invalid result: {type(exc).__name__}: {exc}")
            return
    if kind == "clean" and case.out is not None and (case.out.exists() or not no_partial_output(case.out.parent)):
        tally.add(name, "silent", f"{note}; output left behind after exit 2")
        return
    tally.add(name, kind, note)


def fuzz(seeds: Seeds, work_root: Path, n_cases: int, seed: int, *, stop_after: int = 20,
         seconds: float = float("inf")) -> tuple[Tally, float]:
    names = sorted(TARGETS)
    weights = np.array([WEIGHTS.get(n, 1.0) for n in names])
    weights /= weights.sum()
    rng = np.random.default_rng(seed)
    tally = Tally()
    start = time.perf_counter()
    with _memory_limit(FUZZ_MEMORY_BYTES):
        _run_cases(seeds, work_root, n_cases, seed, names, weights, rng, tally, stop_after, start + seconds)
    shutil.rmtree(work_root, ignore_errors=True)
    return tally, time.perf_counter() - start


@contextlib.contextmanager
def _memory_limit(limit: int):
    """Lower the address-space limit for the body: an input that makes a reader allocate without
    bound fails as a MemoryError traceback (a crash, reported) instead of swapping the machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    new = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (new, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _run_cases(seeds, work_root, n_cases, seed, names, weights, rng, tally, stop_after, deadline) -> None:
    for i in range(n_cases):
        name = names[int(rng.choice(len(names), p=weights))]
        case_rng = np.random.default_rng([seed, i])
        work = work_root / f"case-{i % 4}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        t0 = time.perf_counter()
        run_case(name, TARGETS[name](seeds, case_rng, work), tally)
        tally.add_time(name, time.perf_counter() - t0)
        if tally.bad() >= stop_after or time.perf_counter() > deadline:
            break


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Seeds:
    return Seeds(tmp_path_factory.mktemp("seeds"))


def test_every_target_has_a_valid_seed(seeds, tmp_path):
    """The unmutated inputs succeed, so a case that fails is its mutation's doing."""
    for name in TARGETS:
        if name in ("train-config", "evaluate"):  # no valid run to start / 20 s of InceptionV3: see below
            continue
        case = _pristine(seeds, name, tmp_path / name)
        res = run_cli(case.argv)
        assert res.rc == 0, (name, res.stderr[-500:], res.error)
        if case.check is not None:
            case.check(case.out)


def _pristine(seeds: Seeds, name: str, work: Path) -> Case:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    files = {"consep": seeds.consep, "consep-mat": seeds.consep_mat, "cellvit": seeds.cellvit,
             "hovernet-json": seeds.hovernet, "lizard": seeds.lizard, "pannuke": seeds.pannuke, "coco": seeds.coco,
             "geojson": seeds.geojson}
    if name in files:
        return _convert_case(work, files[name], "consep" if name == "consep-mat" else name, ANY)
    if name in ("qupath-geojson", "hovernet-wsi", "aperio-xml", "geoparquet"):
        attr, fname = {"qupath-geojson": ("qupath", "a.geojson"), "hovernet-wsi": ("hovernet_wsi", "a.json"),
                       "aperio-xml": ("aperio", "a.xml"), "geoparquet": ("parquet", "a.parquet")}[name]
        return _export_case(seeds, work, fname, getattr(seeds, attr), ANY, strict=True)
    if name == "slide-svs":
        return _slide_case(work, "s.svs", seeds.svs, ANY)
    if name == "slide-dicom":
        return _slide_case(work, "s.dcm", seeds.dicom, ANY)
    if name == "slide-plain":
        return _slide_case(work, "s.png", seeds.plain["png"], ANY, mpp="1", slide_mpp="0.25")
    if name == "evaluate":
        return _evaluate_case(work, seeds.eval_coco, seeds.eval_pannuke, seeds.class_map, ANY)
    if name == "checkpoint":
        return _checkpoint_case(seeds, work, seeds.checkpoint, ANY)
    if name == "cohort-csv":
        return _cohort_case(work, _cohort_csv(seeds, work), ANY)
    if name == "synthesize":
        return _synthesize_case(seeds, work, _tile_nuclei_geojson(seeds), None, ANY)
    if name == "detect":
        return _detect_case(seeds, work, dict(seeds.detector), ANY)
    if name == "train-sources":
        return _sources_case(seeds, work, {"s.yaml": SOURCES_YAML, "organs.csv": ORGANS_CSV}, ANY, train=True)
    model = work / "m.json"
    model.write_bytes(seeds.layout_model)
    return Case(["layouts", "sample", "--model", str(model), "-n", "1", "--size", "64", "64", "--out",
                 str(work / "l.json")], ANY, None)


def _assert_no_failures(tally: Tally, elapsed: float) -> None:
    print(f"\n{tally.total} cases in {elapsed:.1f} s\n{tally.table()}")
    assert tally.bad() == 0, "\n".join(tally.failures)


def test_fuzz_every_reader(seeds, tmp_path):
    tally, elapsed = fuzz(seeds, tmp_path / "work", FUZZ_CASES, seed=20261201, seconds=FUZZ_SECONDS)
    _assert_no_failures(tally, elapsed)
    assert tally.total >= min(FUZZ_CASES, 1000), f"only {tally.total} cases in {elapsed:.0f} s: machine overloaded?"
    assert set(tally.counts) == set(TARGETS)


@pytest.mark.slow
def test_evaluate_seed_is_valid(seeds, tmp_path):
    case = _pristine(seeds, "evaluate", tmp_path / "evaluate")
    res = run_cli(case.argv)
    assert res.rc == 0, (res.stderr[-500:], res.error)
    case.check(case.out)


@pytest.mark.slow
def test_fuzz_every_reader_long(seeds, tmp_path):
    tally, elapsed = fuzz(seeds, tmp_path / "work", FUZZ_CASES_SLOW, seed=7)
    _assert_no_failures(tally, elapsed)
    report = os.environ.get("WSI_COSYNTH_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps({"cases": tally.total, "seconds": round(elapsed, 1),
                                            "load": os.getloadavg(), "counts": tally.counts}, indent=1))
