"""Heads whose score is the sum of several heads' scores (e.g. THA+DCR: S = S_THA + S_DCR).

`part_loss_weight` w (default 0, the paper's loss) adds a contrastive term per part in training:
L = L_S(S) + w Σ_h L_S(S_h) + aux. Why it exists: on SynthCaps at the demo's scale the pooled-vector
part (DP/DCR) fits the training pairs much faster than THA, takes the shared loss, and leaves THA's
scores with a 2-3x smaller spread than when THA is trained alone, so the sum ranks like its pooled
part (docs/results.md); a term per part keeps every part trained for retrieval on its own.
"""
from __future__ import annotations

import torch
from torch import nn

from hade.models.encoders.types import AudioFeatures, TextFeatures
from hade.models.heads.base import RetrievalHead
from hade.models.heads.reprs import Reprs


class SumHead(RetrievalHead):
    """S = Σ_h S_h; representations are the union of the parts' (their keys must not collide)."""

    def __init__(self, parts: dict[str, RetrievalHead], part_loss_weight: float = 0.0) -> None:
        super().__init__()
        if not part_loss_weight >= 0:
            raise ValueError(f"part_loss_weight must be >= 0, got {part_loss_weight!r}")
        self.parts = nn.ModuleDict(parts)
        self.part_loss_weight = float(part_loss_weight)
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

    def contrastive_scores(self, text: Reprs, audio: Reprs) -> dict[str, tuple[torch.Tensor, float]]:
        if not self.part_loss_weight:
            return super().contrastive_scores(text, audio)
        parts = {name: part.score(text, audio) for name, part in self.parts.items()}
        out = {"": (sum(parts.values()), 1.0)}
        out.update({f"_{name}": (s, self.part_loss_weight) for name, s in parts.items()})
        return out

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
