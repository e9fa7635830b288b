"""DP: the dot-product (cosine) baseline of the ATR literature (Mei et al. 2022; HADE's "DP (HTSAT)").

Pooled audio vector (mean of the last HTSAT stage) and pooled text vector (CLS) are projected by a
two-layer MLP into a joint space and compared by cosine similarity: S_DP = <â, t̂> / (‖â‖‖t̂‖).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hade.models.encoders.types import AudioFeatures, TextFeatures
from hade.models.heads.base import HeadCapabilities, RetrievalHead
from hade.models.heads.reprs import Reprs


PROJECTIONS = ("mlp", "linear")


def projection(in_dim: int, out_dim: int, kind: str = "mlp") -> nn.Sequential:
    """`mlp`: Linear → ReLU → Linear, as the DP/WavCaps projection heads; `linear`: one Linear, as the DCASE
    2025 baseline's 768 → 1024 / 1024 → 1024 projections (its tensors are then named ``0.weight``/``0.bias``
    either way, so a converted baseline loads by name)."""
    if kind not in PROJECTIONS:
        raise ValueError(f"projection must be one of {list(PROJECTIONS)}, got {kind!r}")
    if kind == "linear":
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))


_projection = projection  # DPHead's argument `projection` shadows the function's name


class DPHead(RetrievalHead):
    """logit_scale: optional multiplier of the cosine that turns scores into softmax logits (LAION-CLAP's
    exp(logit_scale_a), WavCaps' 1/temp, the DCASE 2025 baseline's 1/|tau|), kept for converted models' zero-shot
    probabilities; `score` stays the cosine, so rankings and training are unaffected. projection: `mlp`
    (default) or `linear` (see :func:`projection`)."""

    # `embed` on both sides, a cosine of unit vectors; the projections are inherited by DCR's FactorHead
    capabilities = HeadCapabilities(factorised=True, has_pooled=True, score_bound=1.0,
                                    pooled_projection=("audio_proj", "text_proj"))

    def __init__(self, audio_dims: list[int], text_dim: int, embed_dim: int = 256,
                 logit_scale: float | None = None, projection: str = "mlp") -> None:
        super().__init__()
        if logit_scale is not None and not float(logit_scale) > 0:
            raise ValueError(f"logit_scale must be positive, got {logit_scale!r}")
        self.audio_proj = _projection(audio_dims[-1], embed_dim, projection)
        self.text_proj = _projection(text_dim, embed_dim, projection)
        self.logit_scale = None if logit_scale is None else float(logit_scale)

    def text_repr(self, features: TextFeatures) -> Reprs:
        return {"embed": F.normalize(self.text_proj(features.pooled), dim=-1)}  # [B, D]

    def audio_repr(self, features: AudioFeatures) -> Reprs:
        return {"embed": F.normalize(self.audio_proj(features.pooled), dim=-1)}  # [B, D]

    def score(self, text: Reprs, audio: Reprs) -> torch.Tensor:
        return text["embed"] @ audio["embed"].T
