"""An unknown tissue word is never silent: one warning saying what embedding its prompt gets."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from wsi_cosynth.models.config import TextConfig, load_config
from wsi_cosynth.models.text import TissuePromptWarning, prompt_vocabulary, tissue_prompt_note
from wsi_cosynth.taxonomy import get_taxonomy

pytestmark = pytest.mark.usefixtures("torch_one_thread")
VOCABULARY = set(prompt_vocabulary(TextConfig(), ["other", "epithelial"]))


def test_notes_name_the_embedding_used():
    learned = {"encoder_id": "learned", "vocabulary": VOCABULARY, "trained_tissues": {"colon"}}
    assert tissue_prompt_note("colon", **learned) is None
    assert tissue_prompt_note(" Colon ", **learned) is None  # as prompts spell it
    unk = tissue_prompt_note("ovarian", **learned)
    assert "'ovarian' is not in the model's prompt vocabulary" in unk and "<unk>" in unk and "colon" in unk
    untrained = tissue_prompt_note("kidney", **learned)
    assert "never in the model's training prompts" in untrained and "never updated" in untrained
    assert "unknown" in tissue_prompt_note(None, **learned)  # no tissue given: the prompt says 'unknown'
    frozen = {"encoder_id": "minilm:all-MiniLM-L6-v2", "vocabulary": None, "trained_tissues": {"colon", "lung"}}
    note = tissue_prompt_note("brain", **frozen)
    assert "minilm:all-MiniLM-L6-v2 embedding of 'brain'" in note and "colon, lung" in note
    assert tissue_prompt_note("lung", **frozen) is None
    # nothing recorded about training: only words outside a learned vocabulary can be named
    assert tissue_prompt_note("kidney", encoder_id="learned", vocabulary=VOCABULARY, trained_tissues=None) is None
    assert "<unk>" in tissue_prompt_note("ovarian", encoder_id="learned", vocabulary=VOCABULARY, trained_tissues=None)


def _sample(model, tissue: str) -> list[warnings.WarningMessage]:
    from wsi_cosynth.layouts import layout_from_points

    lay = layout_from_points(np.array([[10.0, 10.0]]), np.array([1]), (32, 32), model.taxonomy).with_tissue(tissue)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.sample([lay, lay], steps=1, generator=torch.Generator().manual_seed(0))
    return [w for w in caught if issubclass(w.category, TissuePromptWarning)]


def test_a_model_warns_once_per_untrained_tissue():
    from wsi_cosynth.models.cosynth import CosynthModel

    model = CosynthModel(load_config("tiny"), get_taxonomy("consep"), mpp=0.25)
    model.trained_tissues = {"colon"}
    assert _sample(model, "colon") == []
    first = _sample(model, "kidney")
    assert len(first) == 1 and "'kidney'" in str(first[0].message)
    assert _sample(model, "kidney") == []  # once per model
    assert len(_sample(model, "ovarian")) == 1


def test_the_bundled_model_knows_the_organs_it_was_trained_on():
    from wsi_cosynth.pipeline.synthetic import default_model_path
    from wsi_cosynth.training.checkpoint import read_metadata, trained_tissues

    meta = read_metadata(default_model_path())
    organs = {"colon", "breast", "kidney", "lung", "prostate", "bladder", "stomach"}
    assert organs <= trained_tissues(meta) == {t.lower() for t in meta["data"]["tissues"]}
    assert "ovarian" not in trained_tissues(meta)  # the demo's tissue: warned, never silent
    assert trained_tissues({"data": {"tissues": ["Lung", "colon"]}}) == {"lung", "colon"}
    assert trained_tissues({"data": {}}) is None
