"""Training on several sources at once (training/mixture.py, training/sources_file.py, the train
CLI): classes mapped by name, unclassified nuclei as the unknown class, tissue per image from a
table, the balance rule, names (never paths) in model.json, warm start adding the unknown class."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from wsi_cosynth.errors import CosynthError
from wsi_cosynth.models.config import load_config
from wsi_cosynth.taxonomy import get_taxonomy
from wsi_cosynth.training.mixture import (SourceSpec, class_lut, load_sources, read_tissue_table,
                                          source_probabilities)
from wsi_cosynth.training.sources_file import read_sources_file

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY_UNKNOWN = """name: tiny-unknown
model: {unshuffle: 1, channels: 16, channel_mults: [1, 2], num_res_blocks: 1, attn_resolutions: [8], num_heads: 2,
        groups: 8, rrdb_blocks: 1, rrdb_channels: 16, rrdb_growth: 8, text: {kind: learned, dim: 16},
        unknown_class: UNKNOWN}
train: {tile_size: 64, crop_size: 32, batch_size: 4, steps: 2, lr: 2.0e-3, ema_decay: 0.99, checkpoint_every: 100,
        log_every: 1, num_threads: 1}
sample: {steps: 3, guidance: 2.0, sampler: ddim}
"""


def _config(folder: Path, unknown: bool = True) -> Path:
    path = folder / f"tiny-{'unknown' if unknown else 'plain'}.yaml"
    path.write_text(TINY_UNKNOWN.replace("UNKNOWN", "true" if unknown else "false"))
    return path


def _consep_subset(folder: Path, stems=("train_1_000", "train_1_001", "train_2_000")) -> Path:
    from conftest import data_path

    root = data_path("consep", "train")
    for sub, ext in (("images", "jpg"), ("inst", "npy"), ("type_mat", "mat")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            shutil.copy(root / sub / f"{stem}.{ext}", folder / sub / f"{stem}.{ext}")
    return folder


def _unclassified_images(folder: Path, stems=("img_a", "img_b")) -> Path:
    """Generated 384 px plain TIFF images (no resolution recorded; glass on the left sixth,
    so the left column of 64 px tiles is not tissue) with GeoJSON nuclei without a class."""
    import tifffile
    from slide_fixtures import synthetic_he

    folder.mkdir(parents=True, exist_ok=True)
    for k, stem in enumerate(stems):
        tifffile.imwrite(folder / f"{stem}.tif", synthetic_he(384, 384, seed=k, tissue_fraction=5 / 6))
        rng = np.random.default_rng(k)
        features = []
        for _ in range(60):
            x, y = rng.uniform(70, 370), rng.uniform(4, 370)
            ring = [[x, y], [x + 7, y], [x + 7, y + 7], [x, y + 7], [x, y]]
            features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                             "properties": {"objectType": "detection"}})
        (folder / f"{stem}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    (folder / "organs.csv").write_text("image,organ,project\nimg_a,kidney,X\nimg_b,breast,Y\n")
    return folder


def test_balance_rules():
    assert np.allclose(source_probabilities([100, 25], "sqrt"), [10 / 15, 5 / 15])
    assert np.allclose(source_probabilities([100, 25], "equal"), [0.5, 0.5])
    assert np.allclose(source_probabilities([100, 25], "tiles"), [0.8, 0.2])
    with pytest.raises(CosynthError, match="balance 'cube'.*sqrt, equal, tiles"):
        source_probabilities([1, 2], "cube")


def test_tissue_table_reads_organs_csv_and_refuses_bad_ones(tmp_path):
    from conftest import data_path

    organs = read_tissue_table(data_path("monuseg", "organs.csv"))
    assert organs["tcga_18_5592_01z_00_dx1"] == "lung" and len(organs) == 30
    assert set(organs.values()) == {"breast", "kidney", "lung", "prostate", "bladder", "colon", "stomach"}
    bad = tmp_path / "bad.csv"
    for text, problem in (("name,organ\na,lung\n", "columns image and organ"),
                          ("image,organ\na,lung\na,kidney\n", "twice"),
                          ("image,organ\na,\n", "line 2: empty")):
        bad.write_text(text)
        with pytest.raises(CosynthError, match=problem) as info:
            read_tissue_table(bad)
        assert str(bad) in str(info.value)


def test_classes_map_by_name_and_unclassified_become_the_unknown_class():
    consep, nucleus, monusac = get_taxonomy("consep"), get_taxonomy("nucleus"), get_taxonomy("monusac")
    assert class_lut(consep, consep, None, unknown_class=False, where="s").tolist() == [0, 1, 2, 3, 4]
    # epithelial -> epithelial, lymphocyte/macrophage/neutrophil -> inflammatory (built-in aliases)
    assert class_lut(monusac, consep, None, unknown_class=False, where="s").tolist() == [0, 3, 2, 2, 2]
    assert class_lut(nucleus, consep, None, unknown_class=True, where="s").tolist() == [0, 5]
    assert class_lut(nucleus, consep, {"nucleus": "other"}, unknown_class=True, where="s").tolist() == [0, 1]
    with pytest.raises(CosynthError, match="source 'mo'.*no class.*unknown_class: true.*--default-class"):
        class_lut(nucleus, consep, None, unknown_class=False, where="source 'mo'")
    with pytest.raises(CosynthError, match="class 'non-tumor' has no mapping into taxonomy 'monusac'"):
        class_lut(get_taxonomy("nucls"), get_taxonomy("monusac"), None, unknown_class=True, where="s")


def test_two_sources_of_different_class_sets_make_one_dataset(tmp_path):
    from wsi_cosynth.training.dataset import TileDataset

    consep = _consep_subset(tmp_path / "consep" / "train")
    images = _unclassified_images(tmp_path / "mono")
    specs = [SourceSpec("consep", data=consep, format="consep", tissue="colon"),
             SourceSpec("mono", data=images, format="slides", slide_mpp=0.25, tissue_table=images / "organs.csv")]
    mixed = load_sources(specs, tile_size=64, balance="equal", unknown_class=True, holdout=["train_2", "img_b"], mpp=0.25)
    assert mixed.taxonomy.key == "consep" and mixed.mpp == 0.25
    assert {t.provenance.tissue for t in mixed.tiles} == {"colon", "kidney"}  # img_b (breast) is held out
    assert {t.provenance.tissue for t in mixed.validation} == {"colon", "breast"}
    n_consep = sum(t.taxonomy.key == "consep" for t in mixed.tiles)
    assert np.isclose(mixed.weights[:n_consep].sum(), 0.5) and np.isclose(mixed.weights.sum(), 1.0)
    described = {d["name"]: d for d in mixed.summary["sources"]}
    assert described["mono"]["classes"] == {"nucleus": "(unknown class)"} and described["consep"]["data"] == "consep/train"
    with pytest.raises(CosynthError, match="no class"):
        load_sources(specs, tile_size=64, balance="equal", unknown_class=False, mpp=0.25)
    with pytest.raises(CosynthError, match=r"--holdout-images: no tiles from \['nowhere'\]"):
        load_sources(specs, tile_size=64, balance="equal", unknown_class=True, holdout=["nowhere"], mpp=0.25)

    ds = TileDataset(mixed.tiles, taxonomy=mixed.taxonomy, tile_size=32, tissue=None, class_luts=mixed.class_luts,
                     weights=mixed.weights)
    rng = np.random.default_rng(0)
    from_consep = np.mean([i < n_consep for i in ds.draw_tiles(4000, rng)])
    assert abs(from_consep - 0.5) < 0.03  # "equal": half the examples from each source, whatever its size
    batch = ds.batch(64, rng)
    unknown = mixed.taxonomy.n_classes + 1
    kidney = [i for i, p in enumerate(batch.prompts) if "kidney" in p and "no nucleus" not in p]
    assert kidney and all("unclassified" in batch.prompts[i] for i in kidney)
    for i in kidney:  # the unclassified nuclei: unknown class in the label target and in the point map
        pts, lab = batch.points[i], batch.x0.label[i]
        assert set(torch.unique(pts[pts > 0]).tolist()) == {unknown}
        assert set(torch.unique(lab[lab > 0]).tolist()) == {unknown}
    colon = [i for i, p in enumerate(batch.prompts) if "colon" in p]
    assert colon and all(int(batch.x0.label[i].max()) <= mixed.taxonomy.n_classes for i in colon)


def test_train_cli_on_two_sources_records_names_and_samples_unclassified_layouts(tmp_path):
    from wsi_cosynth.cli import main
    from wsi_cosynth.layouts import layout_from_points
    from wsi_cosynth.records import UNCLASSIFIED
    from wsi_cosynth.training.checkpoint import load_model

    consep = _consep_subset(tmp_path / "consep" / "train")
    images = _unclassified_images(tmp_path / "mono")
    out = tmp_path / "run"
    args = ["train", "--config", str(_config(tmp_path)), "--balance", "sqrt",
            "--data", str(consep), "--format", "consep", "--tissue", "colon",
            "--data", str(images), "--format", "slides", "--slide-mpp", "0.25", "--tissue-table", str(images / "organs.csv"),
            "--holdout-images", "train_2", "--mpp", "0.25", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    text = (out / "model" / "model.json").read_text()
    assert str(tmp_path) not in text and str(Path.cwd()) not in text  # names, never machine paths
    data = json.loads(text)["data"]
    assert [s["name"] for s in data["sources"]] == ["consep", "mono"] and data["balance"] == "sqrt"
    mono = data["sources"][1]
    assert set(mono["tissues"]) == {"breast", "kidney"} and sum(mono["tissues"].values()) == mono["tiles"] > 0
    assert set(data["tissues"]) == {"breast", "colon", "kidney"} and mono["images"] == 2
    model = load_model(out / "model")
    assert model.supports_unknown_class and model.trained_tissues == {"breast", "colon", "kidney"}
    rng = np.random.default_rng(0)
    layout = layout_from_points(rng.uniform(2, 60, (6, 2)), np.array([UNCLASSIFIED] * 5 + [3]), (64, 64),
                                model.taxonomy, name="mixed").with_tissue("kidney")
    import wsi_cosynth as wc

    (tile,) = wc.synthesize([layout], model, steps=2, seed=0)
    assert tile.image.shape == (64, 64, 3) and (tile.classes >= 1).all()  # unknown points take the drawn class
    assert "unclassified" in tile.extra["prompt"]

    plain = tmp_path / "plain"
    assert main(["train", "--config", str(_config(tmp_path, unknown=False)), "--data", str(consep), "--tissue", "colon",
                 "--mpp", "0.25", "--out", str(plain), "--no-progress"]) == 0
    with pytest.raises(CosynthError, match="2 nuclei have no class.*--default-class"):
        wc.synthesize([layout_from_points([[5, 5], [20, 20]], np.array([UNCLASSIFIED, UNCLASSIFIED]), (64, 64),
                                          get_taxonomy("consep"))], str(plain / "model"), steps=2)


def test_sources_file_and_its_errors(tmp_path, capsys):
    from wsi_cosynth.cli import main

    consep = _consep_subset(tmp_path / "consep" / "train")
    images = _unclassified_images(tmp_path / "mono")
    sources = tmp_path / "sources.yaml"
    sources.write_text("balance: equal\nholdout_images: [img_b]\nsources:\n"
                       "  - {data: consep/train, format: consep, tissue: colon, mpp: 0.25}\n"
                       "  - {name: mono, data: mono, format: slides, slide_mpp: 0.25, tissue_table: mono/organs.csv}\n")
    listed = read_sources_file(sources)
    assert [s.name for s in listed.sources] == ["consep", "mono"] and listed.balance == "equal"
    assert listed.sources[0].data == consep.resolve() and listed.holdout_images == ("img_b",)
    out = tmp_path / "run"
    assert main(["train", "--config", str(_config(tmp_path)), "--sources", str(sources), "--out", str(out),
                 "--no-progress"]) == 0
    data = json.loads((out / "model" / "model.json").read_text())["data"]
    assert data["balance"] == "equal" and data["holdout_images"] == ["img_b"]
    assert [s["probability"] for s in data["sources"]] == [0.5, 0.5]
    for text, problem in (("sources: []\n", "non-empty list 'sources'"),
                          ("sources:\n  - {data: x, colour: red}\n", r"sources\[0\]: unknown key\(s\) \['colour'\]"),
                          ("sources:\n  - {format: consep}\n", "exactly one of data"),
                          ("balance: most\nsources:\n  - {data: x}\n", "balance must be one of"),
                          ("sources:\n  - {data: x, slide_mpp: -1}\n", "slide_mpp must be positive"),
                          ("sources: [\n", "not valid YAML")):
        sources.write_text(text)
        capsys.readouterr()
        assert main(["train", "--config", "tiny", "--sources", str(sources), "--out", str(tmp_path / "bad"),
                     "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert str(sources) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert __import__("re").search(problem, err), err
    assert not (tmp_path / "bad").exists()


def test_warm_start_adds_the_unknown_class_without_changing_classified_predictions(tmp_path):
    from wsi_cosynth.exporters import read_dataset
    from wsi_cosynth.models.cosynth import CosynthModel
    from wsi_cosynth.training.checkpoint import save_checkpoint
    from wsi_cosynth.training.loop import _initial_weights

    consep = _consep_subset(tmp_path / "consep")
    tiles = list(read_dataset(consep, "consep"))
    plain_cfg, unknown_cfg = load_config(_config(tmp_path, False)), load_config(_config(tmp_path, True))
    torch.manual_seed(0)
    plain = CosynthModel(plain_cfg, tiles[0].taxonomy, mpp=0.25)
    with torch.no_grad():  # a non-trivial point encoder and vocabulary, as after training
        plain.denoiser.points.first.weight.normal_()
    save_checkpoint(tmp_path / "plain", plain, steps=1)
    warm = CosynthModel(unknown_cfg, tiles[0].taxonomy, mpp=0.25)
    warm.load_state_dict(_initial_weights(tmp_path / "plain", warm))
    f = warm.denoiser.unshuffle ** 2
    conv_old, conv_new = plain.denoiser.points.first.weight, warm.denoiser.points.first.weight
    assert torch.equal(conv_new[:, :4 * f], conv_old) and torch.allclose(conv_new[:, 4 * f:], conv_old.mean(1, keepdim=True))
    prompts = ["high-quality histopathology colon tissue image including nuclei types of epithelial, other"]
    keep = torch.ones(1, dtype=torch.bool)
    assert torch.allclose(plain.encode_text(prompts, keep), warm.encode_text(prompts, keep))
    points = torch.zeros(1, 64, 64, dtype=torch.long)
    points[0, 10, 10], points[0, 40, 30] = 3, 1
    assert torch.allclose(plain.denoiser.encode_points(points), warm.denoiser.encode_points(points), atol=1e-6)
    points[0, 20, 50] = 5  # an unknown point now adds what an average class would
    assert not torch.allclose(plain.denoiser.encode_points(points.clamp(max=4)), warm.denoiser.encode_points(points))


def test_organ_preset_and_sources_file_agree_with_the_benchmark():
    """cpu-latent-organs is cpu-latent plus the unknown class; the sources file holds out the
    images benchmarks/organ_fidelity.py scores."""
    import importlib.util

    organs, latent = load_config("cpu-latent-organs"), load_config("cpu-latent")
    assert organs.model.unknown_class and not latent.model.unknown_class
    assert organs.model.model_copy(update={"unknown_class": False}) == latent.model
    assert (organs.diffusion, organs.train, organs.sample) == (latent.diffusion, latent.train, latent.sample)
    repo = Path(__file__).resolve().parents[1]
    listed = read_sources_file(repo / "scripts" / "organ_sources.yaml")
    spec = importlib.util.spec_from_file_location("organ_fidelity", repo / "benchmarks" / "organ_fidelity.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert set(bench.HELD_OUT.values()) <= set(listed.holdout_images)
    assert {s.name for s in listed.sources} >= {"consep", "monuseg"} and listed.balance == "sqrt"


def test_a_bundle_records_its_data_by_name(tmp_path):
    """scripts/bundle_model.py turns the machine paths of an older run's data summary into names."""
    import importlib.util

    from wsi_cosynth.models.cosynth import CosynthModel
    from wsi_cosynth.training.checkpoint import read_metadata, save_checkpoint

    model = CosynthModel(load_config("tiny"), get_taxonomy("consep"), mpp=0.25)
    old = {"path": str(tmp_path / "data" / "consep" / "train"), "format": "consep", "n_tiles": 3,
           "slides": [{"slide": str(tmp_path / "slides" / "a.svs"), "tiles": 2}], "tissue": "colon"}
    save_checkpoint(tmp_path / "run", model, steps=1, data=old)
    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("bundle_model", repo / "scripts" / "bundle_model.py")
    bundler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundler)
    bundler.bundle(tmp_path / "run", tmp_path / "bundle")
    text = (tmp_path / "bundle" / "model.json").read_text()
    assert str(tmp_path) not in text
    data = read_metadata(tmp_path / "bundle")["data"]
    assert data["path"] == "consep/train" and data["slides"][0]["slide"] == "slides/a.svs"
    assert data["format"] == "consep" and data["tissue"] == "colon" and data["n_tiles"] == 3
