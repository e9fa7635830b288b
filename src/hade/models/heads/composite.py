"""Heads whose score is the sum of several heads' scores (e.g. THA+DCR: S = S_THA + S_DCR)."""
from __future__ import annotations

import torch
from torch import nn

from hade.models.encoders.types import AudioFeatures, TextFeatures
from hade.models.heads.base import RetrievalHead
from hade.models.heads.reprs import Reprs


class SumHead(RetrievalHead):
    """S = Σ_h S_h; representations are the union of the parts' (their keys must not collide)."""

    def __init__(self, parts: dict[str, RetrievalHead]) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(parts)
        self.factorised = False

    def text_repr(self, features: TextFeatures) -> Reprs:
        return self._union(part.text_repr(features) for part in self.parts.values())

    def audio_repr(self, features: AudioFeatures) -> Reprs:
        return self._union(part.audio_repr(features) for part in self.parts.values())

    @staticmethod
    def _union(reprs) -> Reprs:
        out: Reprs = {}
        for r in reprs:
            clash = set(out) & set(r)
            if clash:
                raise ValueError(f"SumHead: parts share representation keys {sorted(clash)}")
            out.update(r)
        return out

    def score(self, text: Reprs, audio: Reprs) -> torch.Tensor:
        return sum(part.score(text, audio) for part in self.parts.values())

    def aux_losses(self, text: Reprs, audio: Reprs) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for part in self.parts.values():
            out.update(part.aux_losses(text, audio))
        return out

    def pooled_embeddings(self, text: Reprs, audio: Reprs):
        for part in self.parts.values():
            pooled = part.pooled_embeddings(text, audio)
            if pooled is not None:
                return pooled
        return None
