"""What a head's `explain` returns: the tensors behind one pair's score, by kind (docs/heads.md).

`hade.explain` turns them into words, seconds, figures and JSON; the contract test checks each kind's
identities (THA's score from its levels, CA's score from its weights).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ThaLevel:
    """One THA level of one pair: audio stage `audio_stage` (1-based) against text block `text_block`;
    `alpha` [M, N] word weights per audio token and `beta` [M, N] token weights per word (M audio tokens
    of the stage, N text tokens); the scores of the text- and audio-enhanced directions (scalars)."""

    audio_stage: int
    text_block: int
    alpha: torch.Tensor
    beta: torch.Tensor
    text_enhanced: torch.Tensor
    audio_enhanced: torch.Tensor


@dataclass(frozen=True)
class ThaExplanation:
    """THA's part of one pair: `score` = `scale` · Σ_levels (text_enhanced + audio_enhanced);
    `word_mask` [N] bool marks the text tokens that are words (not padding or specials)."""

    score: torch.Tensor
    scale: float
    word_mask: torch.Tensor
    levels: tuple[ThaLevel, ...]


@dataclass(frozen=True)
class FactorExplanation:
    """DCR's part of one pair: `similarity` [K] cos(e_i^t, e_i^a) per factor, `score`, and `confidence`
    [K] the CA weights g_i (None without CA); with CA, Σ_i g_i · similarity_i = score."""

    similarity: torch.Tensor
    score: torch.Tensor
    confidence: torch.Tensor | None


@dataclass(frozen=True)
class HeadExplanation:
    """One pair (text row 0, audio row 0) explained by every kind the head offers; None: not offered.
    The field names are the kinds (`EXPLANATIONS`, `HeadCapabilities.explanations`)."""

    tha: ThaExplanation | None = None
    factors: FactorExplanation | None = None

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds present."""
        return frozenset(f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

    def merged(self, other: "HeadExplanation") -> "HeadExplanation":
        """Self with the kinds only `other` has added (the first part of a sum to offer a kind explains it)."""
        return HeadExplanation(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None
                                  else getattr(other, f.name) for f in dataclasses.fields(self)})


EXPLANATIONS = tuple(f.name for f in dataclasses.fields(HeadExplanation))  # the kinds a head may offer
