"""Augmentation, re-composition, point-process fit/sample, statistics, I/O, CLI."""

import json

import numpy as np
import pytest

from wsi_cosynth.cli import main
from wsi_cosynth.errors import CosynthError
from wsi_cosynth.layouts import layout_from_points, rasterize_points
from wsi_cosynth.layouts.augment import d4, drop_insert, jitter
from wsi_cosynth.layouts.fit import fit_layout_model
from wsi_cosynth.layouts.io import read_layouts, write_layouts
from wsi_cosynth.layouts.fit import calibrate_offsets
from wsi_cosynth.layouts.point_process import (
    Compartment,
    LayoutModel,
    compartment_mosaic,
    load_layout_model,
    sample_layout,
    sample_layouts,
    save_layout_model,
)
from wsi_cosynth.layouts.recompose import recompose
from wsi_cosynth.layouts.stats import layout_distance, layout_statistics
from wsi_cosynth.taxonomy import get_taxonomy

TAX = get_taxonomy("consep")


def toy_layouts(rng, n=12, size=(96, 96)):
    out = []
    for i in range(n):
        m = rng.integers(20, 40)
        xy = rng.uniform(0, size[0], (m, 2))
        cls = np.where(xy[:, 0] < size[1] / 2, 3, 2) if i % 2 else rng.integers(1, 5, m)
        out.append(layout_from_points(xy, cls, size, TAX, name=f"l{i}"))
    return out


def test_d4_matches_image_transform():
    lay = layout_from_points([[3.5, 1.5], [7.2, 4.9]], [1, 2], (6, 9), TAX)
    img = rasterize_points(lay.xy_tile, lay.classes, lay.size)
    for k in range(8):
        t = np.rot90(img, k % 4)
        if k >= 4:
            t = np.fliplr(t)
        out = d4(lay, k)
        assert np.array_equal(rasterize_points(out.xy_tile, out.classes, out.size), t), k


def test_jitter_drop_insert_keep_balance():
    rng = np.random.default_rng(0)
    xy = np.stack(np.meshgrid(np.arange(5, 100, 10.0), np.arange(5, 100, 10.0)), -1).reshape(-1, 2)
    cls = np.repeat([1, 3], 50)
    lay = layout_from_points(xy, cls, (100, 100), TAX)
    j = jitter(lay, 2.0, rng)
    assert 0 < np.abs(j.xy_tile - xy).max() < 15
    di = drop_insert(lay, rng, drop_frac=0.2, insert_frac=0.2, min_dist_px=3)
    counts = np.bincount(di.classes, minlength=5)
    assert counts[1] == counts[3] and counts[1] >= 45


def test_recompose_hits_targets():
    rng = np.random.default_rng(1)
    lay = toy_layouts(rng, 1)[0]
    out = recompose(lay, {"epithelial": 3, "spindle": 1}, rng)
    n = len(lay)
    counts = np.bincount(out.classes, minlength=5)
    assert counts[3] == round(0.75 * n) and counts[3] + counts[4] == n
    assert np.array_equal(out.xy_tile, lay.xy_tile)
    with pytest.raises(CosynthError, match="unknown class"):
        recompose(lay, {"nope": 1}, rng)


def test_fit_sample_save_load(tmp_path):
    rng = np.random.default_rng(2)
    real = toy_layouts(rng)
    model = fit_layout_model(real, np.random.default_rng(3), n_sim=4)
    path = tmp_path / "m.json"
    save_layout_model(model, path)
    assert path.stat().st_size < 4000
    m2 = load_layout_model(path)
    a = sample_layouts(m2, 6, (96, 96), np.random.default_rng(5))
    b = sample_layouts(model, 6, (96, 96), np.random.default_rng(5))
    assert all(np.array_equal(x.xy_tile, y.xy_tile) for x, y in zip(a, b))  # same seed, same layouts
    dens = np.mean([len(x) for x in a]) / 96**2
    assert 0.5 * model.density_per_px2 < dens < 2 * model.density_per_px2
    big = sample_layout(model, (300, 500), np.random.default_rng(0))  # any size
    assert big.size == (300, 500) and len(big) > 0
    hc = np.asarray(model.hardcore_px)
    from scipy.spatial.distance import pdist
    if len(big) > 1:
        assert pdist(big.xy_tile).min() >= hc.min() - 1e-9
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(CosynthError, match="bad.json"):
        load_layout_model(tmp_path / "bad.json")
    old = {**model.to_dict(), "version": 1}
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(CosynthError, match="version 1.*refit"):
        load_layout_model(tmp_path / "old.json")
    broken = model.to_dict()
    broken["compartments"][0]["class_probs"] = [1.0]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(CosynthError, match="broken.json.*class_probs"):
        load_layout_model(tmp_path / "broken.json")
    with pytest.raises(CosynthError, match="empty"):
        fit_layout_model([], rng)


def test_layout_distance_orders_sets():
    rng = np.random.default_rng(4)
    a, b = toy_layouts(rng), toy_layouts(rng)
    dense = [layout_from_points(rng.uniform(0, 96, (150, 2)), np.full(150, 1), (96, 96), TAX) for _ in range(12)]
    near = layout_distance(a, b).total
    far = layout_distance(a, dense).total
    assert near < far
    assert layout_distance(a, a).total == pytest.approx(0.0)
    stats = layout_statistics(a)
    assert {"density", "nn", "nn_same/epithelial", "composition/spindle"} <= set(stats)


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_io_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(6)
    lays = toy_layouts(rng, 3) + [layout_from_points(np.zeros((0, 2)), np.zeros(0, int), (64, 32), TAX, name="empty")]
    p = tmp_path / f"l{suffix}"
    write_layouts(lays, p)
    back = read_layouts(p)
    assert [x.provenance.name for x in back] == [x.provenance.name for x in lays]
    for x, y in zip(lays, back):
        assert x.size == y.size and np.array_equal(x.classes, y.classes)
        assert np.allclose(x.xy_tile, y.xy_tile, atol=1e-3)
    with pytest.raises(CosynthError, match="suffix"):
        write_layouts(lays, tmp_path / "l.txt")


def test_cli_fit_sample(tmp_path, capsys):
    rng = np.random.default_rng(7)
    write_layouts(toy_layouts(rng), tmp_path / "real.json")
    assert main(["layouts", "fit", "--layouts", str(tmp_path / "real.json"), "--out", str(tmp_path / "m.json")]) == 0
    assert main(["layouts", "sample", "--model", str(tmp_path / "m.json"), "-n", "3", "--size", "64", "64",
                 "--out", str(tmp_path / "s.parquet"), "--preview", str(tmp_path / "s.png")]) == 0
    assert len(read_layouts(tmp_path / "s.parquet")) == 3
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["layouts", "sample", "--model", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.json")]) == 2
    assert "missing.json" in capsys.readouterr().err


def one_compartment_model(**kw) -> LayoutModel:
    base = dict(taxonomy=TAX, tissue=None, mpp=None,
                compartments=(Compartment(1.0, 0.0, 2e-3, (0.25, 0.25, 0.25, 0.25)),),
                length_compartment_px=128.0, hardcore_px=((4.0,) * 4,) * 4, spacing_kappa=0.0, softness=0.0,
                mark_coupling=0.0, mark_radius_px=24.0, mark_sweeps=5, n_layouts=1)
    return LayoutModel(**{**base, **kw})


def same_class_nn_fraction(lays) -> float:
    from scipy.spatial import cKDTree

    hits = []
    for lay in lays:
        _, idx = cKDTree(lay.xy_tile).query(lay.xy_tile, k=2)
        hits.append(lay.classes[idx[:, 1]] == lay.classes)
    return float(np.concatenate(hits).mean())


def test_mark_coupling_groups_classes_and_keeps_hardcore():
    free = sample_layouts(one_compartment_model(), 6, (128, 128), np.random.default_rng(0))
    coupled = sample_layouts(one_compartment_model(mark_coupling=2.0), 6, (128, 128), np.random.default_rng(0))
    # Independent marks: about 1/4 of nearest neighbours share the class; coupled: far more.
    assert same_class_nn_fraction(free) < 0.4 < same_class_nn_fraction(coupled)
    hc = np.full((4, 4), 4.0)
    hc[2, 3] = hc[3, 2] = 20.0  # epithelial-spindle pairs must stay 20 px apart after relabelling
    strict = one_compartment_model(mark_coupling=1.0, hardcore_px=tuple(map(tuple, hc)))
    from scipy.spatial.distance import cdist
    for lay in sample_layouts(strict, 4, (128, 128), np.random.default_rng(1)):
        e, s = lay.xy_tile[lay.classes == 3], lay.xy_tile[lay.classes == 4]
        if len(e) and len(s):
            assert cdist(e, s).min() >= 20.0 - 1e-9


def test_scaled_core_spaces_points_regularly():
    kappa, dens = 0.5, 2e-3
    model = one_compartment_model(spacing_kappa=kappa, compartments=(Compartment(1.0, 0.0, dens, (1, 0, 0, 0)),))
    lays = sample_layouts(model, 4, (160, 160), np.random.default_rng(2))
    from wsi_cosynth.layouts.stats import nn_distances
    nn = np.concatenate([nn_distances(x.xy_tile) for x in lays])
    assert nn.min() >= kappa / np.sqrt(dens) - 1e-9  # 11.2 px; a Poisson pattern would go far below
    assert abs(np.mean([len(x) for x in lays]) - dens * 160**2) < 0.25 * dens * 160**2


def test_mosaic_covers_calibrated_area_fractions():
    target = np.array([0.6, 0.3, 0.1])
    b = calibrate_offsets(target, np.random.default_rng(3), n=50_000)
    lab = compartment_mosaic(b, (200, 200), 4.0, 8.0, np.random.default_rng(4))  # ~2500 patches
    frac = np.bincount(lab.ravel(), minlength=3) / lab.size
    assert np.allclose(frac, target, atol=0.05)


def test_fit_finds_dense_and_sparse_compartments():
    rng = np.random.default_rng(8)
    lays = []
    for i in range(10):
        # Left half: dense epithelium; right half: sparse spindle cells.
        e = np.stack([rng.uniform(0, 48, 60), rng.uniform(0, 96, 60)], 1)
        s = np.stack([rng.uniform(48, 96, 10), rng.uniform(0, 96, 10)], 1)
        lays.append(layout_from_points(np.concatenate([e, s]), np.repeat([3, 4], [60, 10]), (96, 96), TAX, name=f"t{i}"))
    model = fit_layout_model(lays, np.random.default_rng(9), n_compartments=2, n_sim=4)
    comps = [c for c in model.compartments if c.density_per_px2 > 0]
    epi = max(comps, key=lambda c: c.class_probs[2])
    spi = max(comps, key=lambda c: c.class_probs[3])
    assert epi.class_probs[2] > 0.8 and spi.class_probs[3] > 0.6
    assert epi.density_per_px2 > 2 * spi.density_per_px2


def test_cli_extract_records_mpp(tmp_path, consep_dir):
    data = tmp_path / "consep"
    for sub, ext in (("images", "jpg"), ("inst", "npy"), ("type_mat", "mat")):
        (data / sub).mkdir(parents=True)
        for name in ("train_1_000", "train_1_001"):
            (data / sub / f"{name}.{ext}").symlink_to(consep_dir / sub / f"{name}.{ext}")
    out = tmp_path / "l.json"
    assert main(["layouts", "extract", "--data", str(data), "--format", "consep", "--tissue", "colon",
                 "--mpp", "0.25", "--out", str(out)]) == 0
    lays = read_layouts(out)
    assert len(lays) == 2 and all(x.provenance.mpp == 0.25 and x.tissue == "colon" for x in lays)
    assert main(["layouts", "extract", "--data", str(data), "--format", "consep", "--mpp", "-1",
                 "--out", str(tmp_path / "x.json")]) == 2
