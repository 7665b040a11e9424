"""Frechet distance, FID, KID, IS and the InceptionV3 feature extractor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import data_path
from wsi_cosynth.errors import CosynthError
from wsi_cosynth.metrics.fid import (
    fid_from_features,
    frechet_distance,
    gaussian_stats,
    kid_from_features,
)
from wsi_cosynth.metrics.inception_score import inception_score, softmax


def _consep_images(n: int) -> list[np.ndarray]:
    from PIL import Image

    paths = sorted(data_path("consep", "train", "images").glob("*.jpg"))
    # Every 27th tile spreads the sample over the source images.
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths[::27][:n]]


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    out = gaussian_filter(image.astype(np.float64), sigma=(sigma, sigma, 0))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- Frechet distance, closed forms


def test_frechet_distance_diagonal_gaussians_closed_form() -> None:
    # For diagonal covariances d^2 = sum (m1 - m2)^2 + sum (s1 - s2)^2 with s the standard deviations.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    sd1, sd2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 2.0, 1.5])
    expected = float(((mu1 - mu2) ** 2).sum() + ((sd1 - sd2) ** 2).sum())
    got = frechet_distance(mu1, np.diag(sd1**2), mu2, np.diag(sd2**2))
    assert expected == pytest.approx(12.25)  # (1 + 0 + 6.25) + (4 + 0 + 1)
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_rotated_covariance_is_invariant_under_common_rotation() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    sd1, sd2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    expected = float(((mu1 - mu2) ** 2).sum() + ((sd1 - sd2) ** 2).sum())
    got = frechet_distance(q @ mu1, q @ np.diag(sd1**2) @ q.T, q @ mu2, q @ np.diag(sd2**2) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_singular_covariances_stay_real_and_zero_for_identical() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 50))  # 5 samples in 50-d: rank-4 covariance
    s = gaussian_stats(x)
    assert frechet_distance(s.mu, s.sigma, s.mu, s.sigma) == pytest.approx(0.0, abs=1e-8)
    assert fid_from_features(x, x + 1.0) == pytest.approx(50.0, rel=1e-6)  # shift only: ||1||^2 = 50


def test_too_few_images_for_covariance_is_a_clear_error() -> None:
    with pytest.raises(CosynthError, match="at least 2 are needed"):
        fid_from_features(np.zeros((1, 2048)), np.zeros((10, 2048)))


# ---------------------------------------------------------------- KID and IS


def test_kid_near_zero_for_same_distribution_and_positive_for_shift() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(200, 16)), rng.normal(size=(200, 16))
    same = kid_from_features(a, b, rng=np.random.default_rng(0), subset_size=100, n_subsets=20)
    shifted = kid_from_features(a, b + 1.0, rng=np.random.default_rng(0), subset_size=100, n_subsets=20)
    assert abs(same.mean) < 0.05
    assert shifted.mean > 1.0
    again = kid_from_features(a, b + 1.0, rng=np.random.default_rng(0), subset_size=100, n_subsets=20)
    assert again.mean == shifted.mean  # seeded subsets give the same answer


def test_inception_score_uniform_predictions_is_one() -> None:
    probs = np.full((50, 1008), 1.0 / 1008)
    score = inception_score(probs, n_splits=5)
    assert score.mean == pytest.approx(1.0, abs=1e-9)
    assert score.std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_confident_balanced_predictions_is_number_of_classes() -> None:
    logits = np.full((40, 4), -50.0)
    logits[np.arange(40), np.arange(40) % 4] = 50.0
    assert inception_score(softmax(logits), n_splits=2).mean == pytest.approx(4.0, rel=1e-6)


def test_inception_score_rejects_non_probabilities() -> None:
    with pytest.raises(CosynthError, match="probability"):
        inception_score(np.ones((10, 3)), n_splits=1)


# ---------------------------------------------------------------- feature extractor on real tiles


@pytest.fixture(scope="module")
def extractor():
    from wsi_cosynth.metrics.inception import InceptionFeatureExtractor

    return InceptionFeatureExtractor()


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    from wsi_cosynth.metrics.inception import InceptionFeatureExtractor

    with pytest.raises(CosynthError, match="InceptionV3 weights file not found"):
        InceptionFeatureExtractor(tmp_path / "nope.pt")


def test_weights_file_that_is_not_torchscript_is_a_clear_error(tmp_path: Path) -> None:
    from wsi_cosynth.metrics.inception import InceptionFeatureExtractor

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(CosynthError, match="not a loadable TorchScript"):
        InceptionFeatureExtractor(bad)


def test_user_weights_returning_features_and_logits_enable_is(tmp_path: Path) -> None:
    import torch

    from wsi_cosynth.metrics.inception import InceptionFeatureExtractor

    class Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pooled = x.mean(dim=(2, 3))  # (B, 3)
            return pooled, torch.zeros(x.shape[0], 10)  # uniform logits

    path = tmp_path / "tiny.pt"
    torch.jit.script(Tiny()).save(str(path))
    out = InceptionFeatureExtractor(path)(np.full((3, 64, 64, 3), 255, dtype=np.uint8))
    assert out.features.shape == (3, 3)
    np.testing.assert_allclose(out.features, 1.0, atol=1e-6)  # 255 -> +1 after scaling to [-1, 1]
    assert out.logits is not None and inception_score(softmax(out.logits), n_splits=1).mean == pytest.approx(1.0)


def test_default_extractor_gives_2048_pool_features_only(extractor) -> None:
    images = np.stack(_consep_images(2))
    out = extractor(images)
    assert out.features.shape == (2, 2048)
    assert out.logits is None
    assert (out.features >= 0).all() and out.features.max() > 0.1  # post-ReLU average pool


def test_fid_zero_against_itself_and_grows_with_blur(extractor) -> None:
    from wsi_cosynth.metrics.inception import extract_features

    images = _consep_images(16)
    assert len(images) == 16
    real = extract_features(images, extractor, batch_size=8).features
    assert fid_from_features(real, real) == pytest.approx(0.0, abs=1e-3)
    fids = []
    for sigma in (1.0, 2.0, 4.0):
        blurred = extract_features([_blur(im, sigma) for im in images], extractor, batch_size=8).features
        fids.append(fid_from_features(real, blurred))
    assert fids[0] > 1.0
    assert fids[0] < fids[1] < fids[2], fids


def test_fid_sample_space_path_matches_covariance_formula() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(size=(12, 30))
    b = rng.normal(size=(9, 30)) * 1.5 + 0.3
    sa, sb = gaussian_stats(a), gaussian_stats(b)
    assert fid_from_features(a, b) == pytest.approx(frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma), rel=1e-6)
    big_a, big_b = rng.normal(size=(40, 5)), rng.normal(size=(35, 5)) + 0.5  # more rows than dimensions
    sa, sb = gaussian_stats(big_a), gaussian_stats(big_b)
    assert fid_from_features(big_a, big_b) == pytest.approx(frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma), rel=1e-6)
