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
from wsi_cosynth.layouts.point_process import load_layout_model, sample_layout, sample_layouts, save_layout_model
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
