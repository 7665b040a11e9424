"""Region synthesis (`wsi-cosynth synthesize`): window plan, per-step fusion, chunk continuation,
instances across block borders, the synthetic slide files, bad input, resume. Tiny latent model
(randomly initialised: the mechanics, not the pictures)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from slide_fixtures import synthetic_he, write_svs
from wsi_cosynth.cli import main
from wsi_cosynth.diffusion.joint import JointState
from wsi_cosynth.models.config import CosynthConfig, SampleConfig, load_config
from wsi_cosynth.models.cosynth import CosynthModel
from wsi_cosynth.pipeline.region_fusion import FusedPrediction, Known, sample_canvas
from wsi_cosynth.pipeline.region_instances import separate_region_instances
from wsi_cosynth.pipeline.region_plan import RegionPlan
from wsi_cosynth.pipeline.region_store import RegionStore
from wsi_cosynth.pipeline.window_plan import WindowPlan, axis_starts, plan_chunks, window_weight, wrapped_starts
from wsi_cosynth.taxonomy import get_taxonomy
from wsi_cosynth.training.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _latent_model() -> CosynthModel:
    """Tiny preset with a 2x latent image (unshuffle 2), 32 px tiles at 0.25 um/px, CoNSeP classes."""
    base = load_config("tiny").to_dict()
    base["model"]["unshuffle"] = 2
    base["model"]["image_latent"] = {"latent_channels": 3, "factor": 2, "channels": 16, "blocks": 1, "full_res_channels": 8}
    torch.manual_seed(0)
    return CosynthModel(CosynthConfig.from_dict(base), get_taxonomy("consep"), mpp=0.25, tile_size=32).eval()


@pytest.fixture(scope="module")
def model() -> CosynthModel:
    return _latent_model()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny-latent", model, steps=0)


@pytest.fixture(scope="module")
def annotated_slide(tmp_path_factory) -> Path:
    """A 384 x 384 slide at 0.25 um/px (glass left, tissue right) with 50 'tumor'/'lymphocyte' nuclei."""
    folder = tmp_path_factory.mktemp("slide")
    slide = write_svs(folder / "gen.svs", synthetic_he(384, 384, seed=1, tissue_fraction=0.6), mpp=0.25)
    rng = np.random.default_rng(3)
    features = []
    for i in range(50):
        x, y = rng.uniform(170, 370), rng.uniform(10, 370)
        ring = [[x, y], [x + 6, y], [x + 6, y + 6], [x, y + 6], [x, y]]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                         "properties": {"objectType": "detection",
                                        "classification": {"name": "Tumor" if i % 3 else "Lymphocyte"}}})
    (folder / "gen.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return slide


# ---------------------------------------------------------------------------------- window plan
def test_windows_cover_the_canvas_and_shifted_borders_move():
    for length, offset in [(100, 0), (100, 17), (257, 31), (32, 5)]:
        starts = axis_starts(length, 32, 24, offset)
        covered = np.zeros(length, bool)
        for s in starts:
            assert 0 <= s <= length - 32
            covered[s:s + 32] = True
        assert covered.all()
    plan = WindowPlan(window=32, cell=2, scheme="shift", overlap=8)
    gen = torch.Generator().manual_seed(0)
    grids = {tuple(plan.starts((96, 96), gen)) for _ in range(8)}
    assert len(grids) > 4  # the grid moves from step to step
    assert all(y % 2 == 0 and x % 2 == 0 for g in grids for y, x in g)
    fixed = WindowPlan(window=32, cell=2, scheme="overlap", overlap=8)
    assert fixed.starts((96, 96), gen) == fixed.starts((96, 96), gen)
    w = window_weight(32, "cosine")
    assert w.min() > 0 and w[16, 16] == pytest.approx(1, abs=0.02) and w[0, 0] < 0.01


def test_wrapped_windows_cover_the_canvas_with_as_many_windows_as_tiles():
    """A torus plan needs ceil(side / window) windows a side wherever its origin falls (a plan
    that pushes windows inside needs one more whenever the origin is not 0), covers every pixel,
    and its origin moves from step to step."""
    for length in (64, 96, 100, 250):
        for offset in (0, 2, 30, length - 2):
            starts = wrapped_starts(length, 32, 32, 2, offset)
            assert len(starts) == -(-length // 32)
            covered = np.zeros(length, int)
            for s in starts:
                assert 0 <= s < length and s % 2 == 0
                covered[(s + np.arange(32)) % length] += 1
            assert covered.min() == 1 if length % 32 == 0 else covered.min() >= 1
        assert len(axis_starts(length, 32, 32, 2)) >= len(starts)
    plan = WindowPlan(window=32, cell=2)  # "wrap" is the default scheme
    gen = torch.Generator().manual_seed(0)
    grids = [plan.starts((96, 64), gen) for _ in range(8)]
    assert all(len(g) == 3 * 2 for g in grids) and len({tuple(g) for g in grids}) > 4


def test_a_wrapped_window_predicts_the_canvas_rolled_under_it(model):
    """A window that runs off the right and bottom edges sees the canvas continued at its left and
    top: with the canvas exactly one window a side, the fused prediction at any origin is the
    single-window prediction of the canvas rolled to that origin, rolled back."""
    h = w = 32
    settings = SampleConfig(steps=4, guidance=2.0, guidance_interval=(0.0, 1.0))
    points = _points(h, w, 6, 4)
    gen = torch.Generator().manual_seed(5)
    x = JointState(torch.randn((1, 3, h // 2, w // 2), generator=gen), torch.randn((1, 1, h, w), generator=gen),
                   torch.randint(0, 5, (1, h, w), generator=gen))
    t = torch.tensor([500])
    plan = WindowPlan(window=32, cell=2, scheme="wrap", weights="cosine")
    window_gen = torch.Generator().manual_seed(11)
    (oy, ox), = plan.starts((h, w), torch.Generator().manual_seed(11))
    assert (oy, ox) != (0, 0)
    fused = FusedPrediction(model, points, "colon", plan, settings, window_generator=window_gen,
                            prompt_generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = fused(x, t)
        rolled = JointState(x.image.roll((-oy // 2, -ox // 2), (-2, -1)), x.distance.roll((-oy, -ox), (-2, -1)),
                            x.label.roll((-oy, -ox), (-2, -1)))
        feats = fused.features.roll((-oy // 2, -ox // 2), (-2, -1))
        text, null = fused._text_for(tuple(int(c) for c in np.unique(points) if c > 0))
        single = model.window_prediction(rolled, t, feats, text, null, guidance=2.0, guidance_interval=(0, 1))
    torch.testing.assert_close(out.eps_distance, single.eps_distance.roll((oy, ox), (-2, -1)), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.eps_image, single.eps_image.roll((oy // 2, ox // 2), (-2, -1)), atol=1e-5, rtol=1e-4)
    expected = torch.log_softmax(single.log_x0_label.roll((oy, ox), (-2, -1)), dim=1)
    torch.testing.assert_close(out.log_x0_label, expected, atol=1e-5, rtol=1e-4)


def test_chunk_cores_tile_the_region_and_canvases_hold_a_window():
    chunks = plan_chunks((100, 150), chunk=64, margin=16, window=32, cell=2)
    owner = np.zeros((100, 150), int)
    for c in chunks:
        y0, y1, x0, x1 = c.core
        owner[y0:y1, x0:x1] += 1
        cy0, cy1, cx0, cx1 = c.canvas
        assert cy1 - cy0 >= 32 and cx1 - cx0 >= 32 and cy1 == y1 and cx1 == x1
        assert cy0 == max(0, min(y0 - 16, y1 - 32)) and cx0 == max(0, min(x0 - 16, x1 - 32))
    assert (owner == 1).all()


def test_pyramid_tiff_levels_and_resolution(tmp_path):
    import openslide
    import tifffile

    from wsi_cosynth.slide.writer import is_synthetic_description, synthetic_description, write_pyramid_tiff

    rgb = np.asarray(synthetic_he(600, 700, seed=2, tissue_fraction=1.0))
    path = write_pyramid_tiff(tmp_path / "x.synthetic.tif", rgb, mpp=0.5, description=synthetic_description({"k": 1}))
    with openslide.OpenSlide(str(path)) as s:
        assert s.level_dimensions == ((700, 600), (350, 300), (175, 150))
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        assert is_synthetic_description(s.properties["tiff.ImageDescription"])
        level0 = np.asarray(s.read_region((0, 0), 0, (700, 600)))[..., :3]
    assert np.abs(level0.astype(int) - rgb).mean() < 3  # JPEG, smooth image
    ids = np.random.default_rng(0).integers(0, 70000, (600, 700, 2)).astype(np.uint32)
    labels = write_pyramid_tiff(tmp_path / "x.labels.tif", ids, mpp=0.5, description="labels", compression="deflate",
                                downsample="nearest")
    with tifffile.TiffFile(labels) as tif:
        assert np.array_equal(tif.pages[0].asarray(), ids)  # lossless, ids > 65535 intact
        assert np.array_equal(tif.pages[1].asarray(), ids[::2, ::2])


# ---------------------------------------------------------------------------------- fusion
def _points(h: int, w: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = np.zeros((h, w), np.int64)
    points[rng.integers(0, h, n), rng.integers(0, w, n)] = rng.integers(1, 5, n)
    return points


def test_fused_prediction_is_the_weighted_mean_of_the_windows(model):
    """Where windows overlap, the fused noise is the weighted mean of theirs and the label
    distribution their renormalised weighted geometric mean: one prediction per pixel."""
    h = w = 56
    plan = WindowPlan(window=32, cell=2, scheme="overlap", overlap=8, weights="cosine")
    settings = SampleConfig(steps=4, guidance=2.0, guidance_interval=(0.0, 1.0))
    points = _points(h, w, 12, 0)
    fused = FusedPrediction(model, points, "colon", plan, settings, window_generator=torch.Generator().manual_seed(0),
                            prompt_generator=torch.Generator().manual_seed(0), batch_size=3)
    gen = torch.Generator().manual_seed(1)
    x = JointState(torch.randn((1, 3, h // 2, w // 2), generator=gen), torch.randn((1, 1, h, w), generator=gen),
                   torch.randint(0, 5, (1, h, w), generator=gen))
    t = torch.tensor([600])
    with torch.no_grad():
        out = fused(x, t)
        starts = plan.starts((h, w))
        assert starts == [(0, 0), (0, 24), (24, 0), (24, 24)]
        singles = []
        for y0, x0 in starts:
            crop = JointState(x.image[..., y0 // 2:y0 // 2 + 16, x0 // 2:x0 // 2 + 16], x.distance[..., y0:y0 + 32, x0:x0 + 32],
                              x.label[..., y0:y0 + 32, x0:x0 + 32])
            text, null = fused._text_for(tuple(int(c) for c in np.unique(points[y0:y0 + 32, x0:x0 + 32]) if c > 0))
            feats = fused.features[..., y0 // 2:y0 // 2 + 16, x0 // 2:x0 // 2 + 16]
            singles.append(model.window_prediction(crop, t, feats, text, null, guidance=2.0, guidance_interval=(0, 1)))
    wgt = window_weight(32, "cosine")
    # Pixel (28, 28) lies in all four windows, at (28 - y0, 28 - x0) inside each.
    local = [(28 - y0, 28 - x0) for y0, x0 in starts]
    weights = np.array([wgt[r, c] for r, c in local])
    dist = np.array([p.eps_distance[0, 0, r, c].item() for p, (r, c) in zip(singles, local)])
    assert out.eps_distance[0, 0, 28, 28].item() == pytest.approx(float((weights * dist).sum() / weights.sum()), abs=1e-5)
    logp = np.stack([p.log_x0_label[0, :, r, c].numpy() for p, (r, c) in zip(singles, local)])
    mean = (weights[:, None] * logp).sum(0) / weights.sum()
    expected = mean - np.log(np.exp(mean).sum())
    np.testing.assert_allclose(out.log_x0_label[0, :, 28, 28].numpy(), expected, rtol=1e-4, atol=1e-5)
    # Pixel (2, 2) is seen by the first window only: its prediction as it is.
    assert out.eps_distance[0, 0, 2, 2].item() == pytest.approx(singles[0].eps_distance[0, 0, 2, 2].item(), rel=1e-5)
    assert torch.allclose(out.log_x0_label.logsumexp(1), torch.zeros(1, h, w), atol=1e-5)


def test_a_chunk_continues_exactly_what_earlier_chunks_fixed(model):
    """Pixels another chunk fixed come out unchanged, in all three modalities, and the canvas is one
    finite state: the fused chain lands on them while its windows use them as context."""
    h = w = 64
    plan = WindowPlan(window=32, cell=2, scheme="shift", overlap=4)
    settings = SampleConfig(steps=5, guidance=2.0, sampler="dpmpp_2m", spacing="trailing")
    first = sample_canvas(model, _points(h, w, 15, 1), "colon", plan, settings, seed=(0, 0)).state
    mask = np.zeros((h, w), bool)
    mask[:, :24] = True  # the left 24 columns were fixed by an earlier chunk
    known = Known(first.image, first.distance, first.label, mask)
    second = sample_canvas(model, _points(h, w, 15, 1), "colon", plan, settings, seed=(0, 1), known=known).state
    torch.testing.assert_close(second.image[..., :12], first.image[..., :12], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(second.distance[..., :24], first.distance[..., :24], atol=1e-4, rtol=1e-4)
    assert torch.equal(second.label[..., :24], first.label[..., :24])
    assert not torch.allclose(second.distance[..., 24:], first.distance[..., 24:])  # the rest is new
    assert torch.isfinite(second.image).all() and int(second.label.max()) < model.process.num_classes


# ---------------------------------------------------------------------------------- instances
def test_a_nucleus_on_a_block_border_is_one_instance(tmp_path):
    """Block cores are 64 px; nuclei centred on the border x = 64 (and y = 64, and the corner) are
    found once each, whole, and written as one Polygon each."""
    h = w = 128
    store = RegionStore(tmp_path / "work", {}, shape_hw=(h, w), image_channels=3, image_factor=1)
    centres = [(64.0, 30.0), (30.0, 64.0), (64.0, 64.0), (100.0, 100.0)]  # (x, y)
    yy, xx = np.mgrid[:h, :w] + 0.5
    distance = np.zeros((h, w), np.float32)
    label = np.zeros((h, w), np.uint8)
    for cx, cy in centres:
        r = np.hypot(xx - cx, yy - cy)
        inside = r < 9
        distance[inside] = np.maximum(distance[inside], 1 - r[inside] / 9)
        label[inside] = 3
    store.distance[:] = distance * 2 - 1
    store.label[:] = label
    plan = RegionPlan(stem="t", source="t.svs", region_level0=(0, 0, w, h), slide_mpp=0.25, mpp=0.25, size_hw=(h, w),
                      canvas_hw=(h, w), xy=np.array(centres), classes=np.array([3, 3, 2, 3]), tissue=None, notes=())
    out = io.StringIO()
    summary = separate_region_instances(store, plan, get_taxonomy("consep"), out, block=64, halo=16)
    assert summary.n_nuclei == 4
    inst = np.asarray(store.instances)
    for cx, cy in centres:
        disc = np.hypot(xx - cx, yy - cy) < 9
        ids = np.unique(inst[disc])
        assert len(ids) == 1 and ids[0] > 0  # the whole nucleus is one instance
    features = json.loads(out.getvalue())["features"]
    assert len(features) == 4 and all(f["geometry"]["type"] == "Polygon" for f in features)
    classes = sorted(f["properties"]["classification"]["name"] for f in features)
    assert classes == ["epithelial", "epithelial", "epithelial", "inflammatory"]
    store.remove()


# ---------------------------------------------------------------------------------- end to end
def _synthesize(slide: Path, out: Path, model_dir: Path, *extra: str) -> int:
    return main(["synthesize", "--slide", str(slide), "--out", str(out), "--model", str(model_dir), "--steps", "3",
                 "--sampler", "dpmpp_2m", "--spacing", "trailing", "--overlap", "8", "--no-progress", "--threads", "1",
                 *extra])


def test_synthetic_slide_opens_in_openslide_and_exports_as_a_dataset(annotated_slide, model_dir, tmp_path):
    import openslide
    import tifffile

    out = tmp_path / "out"
    assert _synthesize(annotated_slide, out, model_dir, "--region", "160", "0", "136", "120", "--chunk", "64") == 0
    slide_path, geojson, labels = out / "gen.synthetic.tif", out / "gen.synthetic.geojson", out / "gen.synthetic-labels.tif"
    with openslide.OpenSlide(str(slide_path)) as s:
        assert s.dimensions == (136, 120)
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert json.loads(s.properties["tiff.ImageDescription"].split("\n", 1)[1])["region_level0"] == [160, 0, 136, 120]
    maps = tifffile.imread(labels, key=0)
    assert maps.shape == (120, 136, 2)
    features = json.loads(geojson.read_text())["features"]
    assert len(features) == int(maps[..., 1].max()) == len(np.unique(maps[..., 1])) - 1
    assert all(f["geometry"]["type"] == "Polygon" and f["properties"]["objectType"] == "detection" for f in features)
    assert not list(out.glob(".*"))  # no work directory or lock left

    coco = tmp_path / "coco"
    assert main(["export", "--slide", str(slide_path), "--annotations", str(geojson), "--source", "real", "--format",
                 "coco", "--out", str(coco), "--mpp", "0.25", "--tile-size", "64", "--min-tissue", "0", "--no-progress"]) == 0
    index = json.loads((coco / "annotations.json").read_text())
    assert index["images"] and all(im["wsi_cosynth"]["provenance"]["synthetic"] is True for im in index["images"])


def test_bad_input_is_one_line_and_exit_2(annotated_slide, model_dir, tmp_path, capsys):
    cases = [
        (["--region", "300", "300", "200", "200"], "not inside slide"),
        (["--region", "0", "0", "0", "50"], "must be positive"),
    ]
    for k, (extra, message) in enumerate(cases):
        assert _synthesize(annotated_slide, tmp_path / f"o{k}", model_dir, *extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    blank = write_svs(tmp_path / "blank.svs", np.full((256, 256, 3), 245, np.uint8), mpp=0.25)
    assert _synthesize(blank, tmp_path / "o9", model_dir) == 2
    err = capsys.readouterr().err.strip()
    assert "no tissue" in err and len(err.splitlines()) == 1
    assert not any(p.exists() and any(p.iterdir()) for p in tmp_path.glob("o*"))


def test_killed_run_resumes_to_the_same_files(annotated_slide, model_dir, tmp_path):
    common = ["--region", "160", "0", "128", "128", "--chunk", "64", "--steps", "4"]
    full = tmp_path / "full"
    assert _synthesize(annotated_slide, full, model_dir, *common) == 0

    out = tmp_path / "resumed"
    manifest = out / ".gen.synthetic.work" / "manifest.json"
    cmd = [sys.executable, "-m", "wsi_cosynth", "synthesize", "--slide", str(annotated_slide), "--out", str(out),
           "--model", str(model_dir), "--sampler", "dpmpp_2m", "--spacing", "trailing", "--overlap", "8",
           "--no-progress", "--threads", "1", *common]
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    done: list = []
    while time.time() < deadline and proc.poll() is None:
        try:
            done = json.loads(manifest.read_text())["done"]
        except (OSError, ValueError, KeyError):
            done = []
        if done:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and 1 <= len(done) < 4, "the run was not interrupted midway"
    assert not (out / "gen.synthetic.tif").exists()  # nothing half-written
    assert _synthesize(annotated_slide, out, model_dir, *common) == 0
    for name in ("gen.synthetic.tif", "gen.synthetic.geojson", "gen.synthetic-labels.tif"):
        assert (out / name).read_bytes() == (full / name).read_bytes(), name
    assert not manifest.parent.exists()


def _unknown_class_model_dir(root: Path) -> Path:
    base = load_config("tiny").to_dict()
    base["model"]["unshuffle"] = 2
    base["model"]["image_latent"] = {"latent_channels": 3, "factor": 2, "channels": 16, "blocks": 1, "full_res_channels": 8}
    base["model"]["unknown_class"] = True
    torch.manual_seed(0)
    net = CosynthModel(CosynthConfig.from_dict(base), get_taxonomy("consep"), mpp=0.25, tile_size=32).eval()
    return save_checkpoint(root / "tiny-unknown", net, steps=0)


def test_unclassified_nuclei_stay_unknown_for_a_model_with_an_unknown_class(tmp_path, capsys):
    """MoNuSeg-like outlines without a class: a model with an unknown class draws them as its
    unknown point (K + 1) and names them in the prompt, with no --default-class and no class
    made up; every nucleus is still written."""
    from wsi_cosynth.pipeline import region as region_module

    slide = write_svs(tmp_path / "plain.svs", synthetic_he(160, 160, seed=4, tissue_fraction=1.0), mpp=0.25)
    rng = np.random.default_rng(5)
    centres = rng.uniform(10, 150, (20, 2))
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[x, y], [x + 5, y], [x + 5, y + 5],
                                                                                  [x, y + 5], [x, y]]]},
                 "properties": {"objectType": "detection"}} for x, y in centres]
    (tmp_path / "plain.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    model_dir = _unknown_class_model_dir(tmp_path)
    seen: list[np.ndarray] = []
    original = region_module._chunk_points

    def record(plan, chunk, n_classes):
        seen.append(original(plan, chunk, n_classes))
        return seen[-1]

    region_module._chunk_points = record
    try:
        assert _synthesize(slide, tmp_path / "out", model_dir, "--region", "0", "0", "160", "160") == 0
    finally:
        region_module._chunk_points = original
    assert "were given class" not in capsys.readouterr().err
    values = np.unique(np.concatenate([m.ravel() for m in seen]))
    assert values.tolist() == [0, get_taxonomy("consep").n_classes + 1]  # background and the unknown point only
    written = json.loads((tmp_path / "out" / "plain.synthetic.geojson").read_text())["features"]
    assert len(written) >= 0.8 * len(features)


PEAK_MEMORY_SCRIPT = """
import re, sys
from wsi_cosynth.pipeline.region import RegionOptions, synthesize_region
side = int(sys.argv[3])
synthesize_region(sys.argv[1], sys.argv[2], region=(0, 0, side, side), model=sys.argv[4],
                  options=RegionOptions(steps=2, sampler="dpmpp_2m", spacing="trailing", chunk=96, margin=16),
                  device="cpu", threads=1)
print(int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)))
"""


def test_peak_memory_does_not_grow_with_the_region(tmp_path, model_dir):
    """A region 4x larger (4x the chunks) peaks within 8 MiB of the smaller one: the region's maps
    live on disk (read through fresh mappings) and each chunk's and block's memory is given back
    before the next. Anything holding one region-sized float map at the larger size (the RGB
    image: 12 MiB, the label's per-class log-probabilities: 20 MiB) would exceed it; before the
    fixes the peak grew by 15 MiB (tiny model) and 32% (bundled model). What growth remains
    (~6 MiB) is the instance pass's blocks, 512 px at the small size and 576 px with their halo
    at the large one."""
    image = synthetic_he(1024, 1024, seed=6, tissue_fraction=1.0)
    slide = write_svs(tmp_path / "big.svs", image, mpp=0.25)
    rng = np.random.default_rng(7)
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[x, y], [x + 5, y], [x + 5, y + 5],
                                                                                  [x, y + 5], [x, y]]]},
                 "properties": {"objectType": "detection", "classification": {"name": "Tumor"}}}
                for x, y in rng.uniform(5, 1015, (1500, 2))]
    (tmp_path / "big.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    peaks = {}
    for side in (512, 1024):
        out = subprocess.run([sys.executable, "-c", PEAK_MEMORY_SCRIPT, str(slide), str(tmp_path / f"o{side}"), str(side),
                              str(model_dir)], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                             text=True, check=True, timeout=600)
        peaks[side] = int(out.stdout.strip().splitlines()[-1]) / 1024
    assert peaks[1024] - peaks[512] < 8, peaks


def test_a_slide_without_annotations_gets_resampled_nuclei_on_its_tissue(model_dir, tmp_path, capsys):
    """No annotations: the points come from the bundled layout model, drawn over the region and
    kept where the slide has tissue (the right 60% here), and the notes say so."""
    from wsi_cosynth.pipeline.region_plan import plan_region

    rng = np.random.default_rng(8)
    image = np.full((512, 768, 3), 244, np.uint8)  # glass on the left 40%, saturated H&E-like tissue right
    image[:, 307:] = np.clip(np.array([190, 90, 170]) + rng.normal(0, 12, (512, 461, 3)), 0, 255).astype(np.uint8)
    slide = write_svs(tmp_path / "bare.svs", image, mpp=0.25)
    region = (0, 0, 768, 512)
    plan = plan_region(slide, taxonomy=get_taxonomy("consep"), model_mpp=0.25, window=32, cell=2, region=region)
    assert len(plan.classes) >= 50 and any("resampled from the layout model" in n for n in plan.notes)
    assert plan.xy[:, 0].min() > 307 - 16  # on the tissue side only (glass on the left 40%)
    assert plan.xy[:, 0].max() > 700  # and over all of it
    assert set(np.unique(plan.classes)) <= set(range(1, get_taxonomy("consep").n_classes + 1))
    again = plan_region(slide, taxonomy=get_taxonomy("consep"), model_mpp=0.25, window=32, cell=2, region=region)
    np.testing.assert_array_equal(plan.xy, again.xy)  # seeded
    out = tmp_path / "out"
    assert _synthesize(slide, out, model_dir, "--region", "448", "0", "192", "128") == 0
    assert "resampled from the layout model" in capsys.readouterr().err
    assert (out / "bare.synthetic.tif").is_file()
    assert _synthesize(slide, tmp_path / "o2", model_dir, "--layouts", "annotations") == 2
    assert "no nuclei annotations" in capsys.readouterr().err
