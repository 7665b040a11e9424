"""The organ probe of benchmarks/organ_fidelity.py: a linear classifier on image features, its
strength chosen leave-one-image-out, and the shares it reports."""

from __future__ import annotations

import numpy as np

from wsi_cosynth.metrics.organ_probe import OrganProbe


def _features(rng: np.random.Generator, organs: list[str], per_image: int, images: int, shift: float):
    """Features of tiles of several images per organ: organ direction + image offset + noise."""
    dims = 32
    centres = {o: rng.normal(0, 1, dims) * shift for o in organs}
    feats, labels, groups = [], [], []
    for o in organs:
        for i in range(images):
            offset = rng.normal(0, 0.5, dims)
            for _ in range(per_image):
                feats.append(centres[o] + offset + rng.normal(0, 1, dims))
                labels.append(o)
                groups.append(f"{o}-{i}")
    return np.array(feats), labels, groups, centres


def test_the_probe_names_separable_organs_of_unseen_images():
    rng = np.random.default_rng(0)
    organs = ["breast", "kidney", "lung"]
    feats, labels, groups, centres = _features(rng, organs, per_image=6, images=4, shift=1.5)
    probe = OrganProbe.fit(feats, labels, groups)
    assert probe.organs == tuple(sorted(organs))
    held_out = np.array([centres[o] + rng.normal(0, 1, 32) for o in organs for _ in range(20)])
    truth = [o for o in organs for _ in range(20)]
    assert probe.share_named(held_out, truth) > 0.9
    wrong = [organs[(organs.index(o) + 1) % 3] for o in truth]
    assert probe.share_named(held_out, wrong) < 0.1  # named as their own organ, not as a wrong prompt


def test_the_strength_is_chosen_by_held_out_images():
    """With image offsets as large as the organ signal and few tiles, tiles of one image are easy
    to fit and hard to generalise from: leave-one-image-out picks a strength, and the fit is
    deterministic."""
    rng = np.random.default_rng(1)
    feats, labels, groups, _ = _features(rng, ["a", "b"], per_image=3, images=3, shift=0.7)
    first = OrganProbe.fit(feats, labels, groups)
    again = OrganProbe.fit(feats, labels, groups)
    assert first.strength == again.strength
    np.testing.assert_allclose(first.weights, again.weights)
