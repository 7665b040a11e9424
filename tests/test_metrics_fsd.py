"""FSD: Frechet distance between per-tile class-proportion vectors (percent scale)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wsi_cosynth.errors import CosynthError
from wsi_cosynth.metrics.fsd import FSD_SCALE, class_proportions, fsd_from_proportions


def _map_with_foreground(n_fg: int) -> np.ndarray:
    """2 x 2 label map with ``n_fg`` pixels of class 1."""
    flat = np.zeros(4, dtype=np.int64)
    flat[:n_fg] = 1
    return flat.reshape(2, 2)


def test_class_proportions_are_percent_with_background_first() -> None:
    sem = np.array([[0, 0, 1, 2], [2, 2, 0, 0]])
    np.testing.assert_allclose(class_proportions(sem, n_classes=3), [50.0, 12.5, 37.5, 0.0])
    assert FSD_SCALE == 100.0


def test_fsd_matches_hand_computation() -> None:
    # Set A: 25, 50, 75 % foreground; set B: 0, 50 %. Vectors are (bg, fg) = (100 - f, f), so both
    # covariances are multiples of u u^T with u = (1, -1)/sqrt(2): var_A(f) = 625 -> S_A = 1250 u u^T,
    # var_B(f) = 1250 -> S_B = 2500 u u^T. Mean difference (25, -25): ||d||^2 = 1250.
    # FSD = 1250 + (sqrt(1250) - sqrt(2500))^2 = 5000 - 100 sqrt(1250).
    a = np.stack([class_proportions(_map_with_foreground(n), 1) for n in (1, 2, 3)])
    b = np.stack([class_proportions(_map_with_foreground(n), 1) for n in (0, 2)])
    expected = 5000.0 - 100.0 * math.sqrt(1250.0)
    assert expected == pytest.approx(1464.466, abs=1e-3)
    assert fsd_from_proportions(a, b) == pytest.approx(expected, rel=1e-9)
    assert fsd_from_proportions(b, a) == pytest.approx(expected, rel=1e-9)


def test_fsd_of_a_set_with_itself_is_zero_and_unit_scale_is_percent_over_1e4() -> None:
    rng = np.random.default_rng(0)
    maps = [rng.integers(0, 4, size=(16, 16)) for _ in range(6)]
    props = np.stack([class_proportions(m, 3) for m in maps])
    assert fsd_from_proportions(props, props) == pytest.approx(0.0, abs=1e-9)
    shifted = np.stack([class_proportions(np.where(m == 0, 1, m), 3) for m in maps])
    percent = fsd_from_proportions(props, shifted)
    unit = fsd_from_proportions(props / FSD_SCALE, shifted / FSD_SCALE)
    assert percent > 0 and unit == pytest.approx(percent / FSD_SCALE**2, rel=1e-9)


def test_fsd_errors_name_the_problem() -> None:
    one = np.array([[50.0, 50.0]])
    with pytest.raises(CosynthError, match="at least 2"):
        fsd_from_proportions(one, np.vstack([one, one]))
    with pytest.raises(CosynthError, match="same classes"):
        fsd_from_proportions(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(CosynthError, match="label values must be in 0..2"):
        class_proportions(np.array([[0, 3]]), n_classes=2)
