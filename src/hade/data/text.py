"""Caption normalisation applied before tokenisation (`ModelConfig.caption_normalize`).

``"none"``: captions are tokenised as given. ``"dcase"``: the DCASE 2025 task 6 baseline's normalisation
(CPJKU/dcase2025_task6_baseline, ``d25_t6/retrieval_module.py``, ``forward_text``): lower case, then every
ASCII punctuation character (Python's ``string.punctuation``) removed; nothing else changes (no whitespace
collapsing, non-ASCII punctuation kept), so results match that baseline's text input exactly.

The model applies it in ``RetrievalModel.tokenize`` / ``text_features``, the one path every caption takes
(training pairs, evaluation captions, index/search/serve queries, auxiliary captions); the field is part of
the ModelConfig saved with each checkpoint, so a loaded model normalises its queries as it was trained.
"""
from __future__ import annotations

import string
from typing import Iterable

from hade.errors import InputError

CAPTION_NORMALIZATIONS = ("none", "dcase")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def check_caption_normalize(mode: str, where: str = "caption_normalize") -> str:
    """`mode` if it is one of CAPTION_NORMALIZATIONS, else an InputError naming `where`."""
    if mode not in CAPTION_NORMALIZATIONS:
        raise InputError(f"{where}: expected one of {list(CAPTION_NORMALIZATIONS)}, got {mode!r}")
    return mode


def normalize_caption(text: str, mode: str) -> str:
    """One caption under `mode` ("none": unchanged; "dcase": lower case, ASCII punctuation removed)."""
    if mode == "none":
        return text
    check_caption_normalize(mode)
    return text.lower().translate(_PUNCTUATION)


def normalize_captions(captions: Iterable[str], mode: str) -> list[str]:
    """`normalize_caption` of each caption, as a new list."""
    check_caption_normalize(mode)
    return [normalize_caption(c, mode) for c in captions]
