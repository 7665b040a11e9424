"""Warm-starting a model WITH the unknown class (``model.unknown_class``) from one without it.

Two parameters change shape when the unknown class is added; everything else is kept as it is:

- the point encoder's first convolution gains the input channels of the unknown point (after
  the pixel-unshuffle, one per sub-position of the f x f cell): they start as the mean of the
  class channels at the same sub-position, so an unknown point first acts like the average
  classified point, which is what it is;
- the learned text encoder's vocabulary gains the word ``unclassified``: the old rows move to
  the words' new (sorted) places and the new word starts as the mean of the class words.
"""

from __future__ import annotations

import torch

from ..models.cosynth import CosynthModel
from ..models.text import UNCLASSIFIED_WORD, LearnedTextEncoder, prompt_class_names, prompt_vocabulary, tokenize_words

POINT_CONV = "denoiser.points.first.weight"
EMBEDDING = "text_encoder.embedding.weight"


def lacks_unknown_class(state: dict[str, torch.Tensor], model: CosynthModel) -> bool:
    """Whether ``state`` is ``model``'s weights without the unknown class (its point channels)."""
    expected = model.state_dict()
    if not model.supports_unknown_class or POINT_CONV not in state or POINT_CONV not in expected:
        return False
    f2 = model.denoiser.unshuffle ** 2
    return state[POINT_CONV].shape[1] == expected[POINT_CONV].shape[1] - f2


def add_unknown_class(state: dict[str, torch.Tensor], model: CosynthModel) -> dict[str, torch.Tensor]:
    """``state`` (weights of the same network without the unknown class) reshaped for ``model``."""
    out = dict(state)
    n_classes, f2 = model.taxonomy.n_classes, model.denoiser.unshuffle ** 2
    conv = state[POINT_CONV]  # (C, K * f2, 3, 3): channel c * f2 + j is class c at sub-position j
    per_class = conv.reshape(conv.shape[0], n_classes, f2, *conv.shape[2:])
    out[POINT_CONV] = torch.cat([conv, per_class.mean(dim=1)], dim=1)
    encoder = model.text_encoder
    if isinstance(encoder, LearnedTextEncoder) and EMBEDDING in state:
        text = model.config.model.text
        names = list(model.taxonomy.names)
        old_vocabulary = LearnedTextEncoder(prompt_vocabulary(text, prompt_class_names(names, unknown_class=False)),
                                            1).vocabulary
        old = state[EMBEDDING]
        rows = {w: old[i] for i, w in enumerate(old_vocabulary)}
        class_words = [w for n in names for w in tokenize_words(n) if w in rows]
        start = torch.stack([rows[w] for w in class_words]).mean(0) if class_words else old[0]
        out[EMBEDDING] = torch.stack([rows.get(w, start) if w != UNCLASSIFIED_WORD else start
                                      for w in encoder.vocabulary])
    return out
