"""Shared fixtures. Real data is found through one setting: WSI_COSYNTH_DATA (default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("WSI_COSYNTH_DATA", REPO.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    """Path under the real-data root; skips the calling test when it is absent."""
    p = DATA_ROOT.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} (set WSI_COSYNTH_DATA)")
    return p


@pytest.fixture
def consep_dir() -> Path:
    return data_path("consep", "train")


@pytest.fixture
def nucls_dir() -> Path:
    return data_path("nucls")


@pytest.fixture
def formats_dir() -> Path:
    return data_path("formats")


@pytest.fixture(scope="module")
def torch_one_thread():
    """Small tensors: one torch thread avoids OpenMP oversubscription on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
