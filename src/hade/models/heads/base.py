"""The interface every retrieval head implements (DP, THA, DCR, co-attention, HCI, DiffATR).

A head turns encoder features into per-item representations, once per item, and scores every text
against every audio. Scoring all pairs is done in blocks (`score_all`) so that heads whose score does
not factorise (cross attention, confidence MLPs) keep memory bounded on large collections.
"""
from __future__ import annotations

import torch
from torch import nn

from hade.models.encoders.types import AudioFeatures, TextFeatures
from hade.models.heads.reprs import Reprs, num_items, slice_reprs


class RetrievalHead(nn.Module):
    """Base class of all heads.

    factorised: True when score(t, a) = <text_repr["embed"][t], audio_repr["embed"][a]>, so that the
        head's representations can live in an ANN index; other heads act as re-rankers.
    """

    factorised: bool = False
    # True when a text's scores depend on the whole candidate set passed to `score` (DiffATR normalises
    # over candidates): all-pairs scoring must then pass every audio in one call.
    set_scoring: bool = False

    def text_repr(self, features: TextFeatures) -> Reprs:
        """Per-text representation; every tensor is [B_t, ...]."""
        raise NotImplementedError

    def audio_repr(self, features: AudioFeatures) -> Reprs:
        """Per-audio representation; every tensor is [B_a, ...]."""
        raise NotImplementedError

    def score(self, text: Reprs, audio: Reprs) -> torch.Tensor:
        """Similarity of every text with every audio: [B_t, B_a] (higher = more similar)."""
        raise NotImplementedError

    def contrastive_scores(self, text: Reprs, audio: Reprs) -> dict[str, tuple[torch.Tensor, float]]:
        """The score matrices that training puts through NT-Xent, with their weights: {suffix: ([B_t, B_a],
        weight)}; the loss of suffix "" is `nt_xent`, others `nt_xent<suffix>`. Default: `score` alone."""
        return {"": (self.score(text, audio), 1.0)}

    def aux_losses(self, text: Reprs, audio: Reprs) -> dict[str, torch.Tensor]:
        """Extra weighted training losses on a batch of matched pairs (row i of text ↔ row i of audio)."""
        return {}

    def pooled_embeddings(self, text: Reprs, audio: Reprs) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Optional L2-normalised global vectors for ANN recall ([B_t, D], [B_a, D])."""
        if "embed" in text and "embed" in audio:
            return text["embed"], audio["embed"]
        return None


@torch.no_grad()
def score_all(
    head: RetrievalHead, text: Reprs, audio: Reprs, text_block: int = 1024, audio_block: int = 1024
) -> torch.Tensor:
    """All-pairs scores [T, A] computed block by block (text_block × audio_block at a time)."""
    n_text, n_audio = num_items(text), num_items(audio)
    if head.set_scoring:
        audio_block = n_audio
    rows = []
    for t0 in range(0, n_text, text_block):
        t_part = slice_reprs(text, t0, t0 + text_block)
        cols = [
            head.score(t_part, slice_reprs(audio, a0, a0 + audio_block)).float().cpu()
            for a0 in range(0, n_audio, audio_block)
        ]
        rows.append(torch.cat(cols, 1))
    return torch.cat(rows, 0)
