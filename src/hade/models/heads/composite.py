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

from hade.losses import ClipPairs
from hade.models.encoders.types import AudioFeatures, TextFeatures
from hade.models.heads.base import HeadCapabilities, RetrievalHead
from hade.models.heads.explanation import HeadExplanation
from hade.models.heads.reprs import Reprs


class SumHead(RetrievalHead):
    """S = Σ_h S_h; representations are the union of the parts' (their keys must not collide)."""

    def __init__(self, parts: dict[str, RetrievalHead], part_loss_weight: float = 0.0) -> None:
        super().__init__()
        if not part_loss_weight >= 0:
            raise ValueError(f"part_loss_weight must be >= 0, got {part_loss_weight!r}")
        self.parts = nn.ModuleDict(parts)
        self.part_loss_weight = float(part_loss_weight)

    @property
    def capabilities(self) -> HeadCapabilities:  # type: ignore[override]
        """What the parts offer: a flag if any part has it, the union of explanation kinds and rotation
        pairs, the sum of the parts' score bounds when all declare one. Never factorised (a sum of scores is
        not one dot product of the parts' pooled vectors); no pooled projection of its own (each part
        declares its own, which hade.train.init reads)."""
        parts = [part.capabilities for part in self.parts.values()]
        bounds = [c.score_bound for c in parts]
        return HeadCapabilities(
            has_pooled=any(c.has_pooled for c in parts), needs_phrases=any(c.needs_phrases for c in parts),
            uses_aux_captions=any(c.uses_aux_captions for c in parts), set_scoring=any(c.set_scoring for c in parts),
            explanations=frozenset().union(*(c.explanations for c in parts)),
            rotation_pairs=tuple(pair for c in parts for pair in c.rotation_pairs),
            score_bound=None if any(b is None for b in bounds) else float(sum(bounds)))

    def summed_parts(self) -> dict[str, RetrievalHead]:
        return dict(self.parts)

    def _pooled_part(self) -> RetrievalHead | None:
        """The first part with pooled vectors: its vectors stand for the sum in ANN recall."""
        return next((part for part in self.parts.values() if part.capabilities.has_pooled), None)

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

    def aux_losses(self, text: Reprs, audio: Reprs, pairs: ClipPairs | None = None) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for part in self.parts.values():
            out.update(part.aux_losses(text, audio, pairs))
        return out

    def pooled_text(self, text: Reprs) -> torch.Tensor | None:
        part = self._pooled_part()
        return None if part is None else part.pooled_text(text)

    def pooled_audio(self, audio: Reprs) -> torch.Tensor | None:
        part = self._pooled_part()
        return None if part is None else part.pooled_audio(audio)

    def text_vector(self, features: TextFeatures) -> torch.Tensor | None:
        part = self._pooled_part()
        return None if part is None else part.text_vector(features)

    def audio_vector(self, features: AudioFeatures) -> torch.Tensor | None:
        part = self._pooled_part()
        return None if part is None else part.audio_vector(features)

    def explain(self, text: Reprs, audio: Reprs) -> HeadExplanation:
        out = HeadExplanation()
        for part in self.parts.values():
            out = out.merged(part.explain(text, audio))  # the first part of a kind explains it
        return out
