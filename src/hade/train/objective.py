"""The training objective: one contrastive loss, the same code whether one process trains or several.

L = L_S + Σ weighted auxiliary losses of the head (α L_D + β L_A for DCR), where L_S is the symmetric
NT-Xent (hade.losses) of the head's score matrix at temperature τ (`TrainConfig.temperature`, owned by
`ContrastiveObjective`); heads may add weighted contrastive terms on other score matrices
(`contrastive_scores`, e.g. per part of a sum head).

Several processes (the design of open_clip's ClipLoss with gathered features and a local loss): every
rank gathers the head representations and clip ids of all W ranks, with gradients for its own part
(hade.train.distributed.gather_reprs; with one process the gather is the identity). Rank r, holding the
pairs [r·b, (r+1)·b) of the global batch of B = W·b, scores its b texts against all B audios (rows) and
all B texts against its b audios (columns) and takes

    L_r = (Σ_{i ∈ rows of r} CE_row_i + Σ_{j ∈ columns of r} CE_col_j) / B + aux(gathered batch) / W

so that Σ_r L_r = L, the loss of the global batch (hade.losses.nt_xent_partial). Each rank back-propagates
W·L_r (`backward_scale`): the all-gather's backward sums on the owning rank the gradients that every rank's
loss sends to its representations, and DDP averages parameter gradients over the W ranks, so the step
follows (1/W)·∂(Σ_r W·L_r)/∂θ = ∂L/∂θ exactly. With W = 1 the rows and columns are the same B×B matrix,
computed once, and L_0 = L.

Heads whose scores need the whole set (`capabilities.set_scoring`, scores over all-pairs token features)
score the full B×B matrix on every rank and take their columns from it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hade.errors import InputError
from hade.losses import SAME_CLIP_MODES, ClipPairs, nt_xent_partial
from hade.models.heads.base import RetrievalHead
from hade.models.heads.reprs import Reprs, slice_reprs
from hade.models.retrieval import RetrievalModel
from hade.train.distributed import DistContext, gather_reprs, gather_tensor

Scores = dict[str, tuple[torch.Tensor, float]]  # suffix -> (score matrix, weight), as contrastive_scores


def _score_shares(head: RetrievalHead, text_all: Reprs, audio_all: Reprs, start: int, b: int,
                  total: int) -> tuple[Scores, Scores]:
    """(rows [b, B], columns [B, b]) of every contrastive score matrix for the local pairs start..start+b-1
    of the `total` = B gathered pairs."""
    if b == total:  # the local pairs are the whole batch: rows and columns are one matrix, scored once
        scores = head.contrastive_scores(text_all, audio_all)
        return scores, scores
    text_loc, audio_loc = slice_reprs(text_all, start, start + b), slice_reprs(audio_all, start, start + b)
    rows = head.contrastive_scores(text_loc, audio_all)
    if head.capabilities.set_scoring:
        full = head.contrastive_scores(text_all, audio_all)
        return rows, {k: (s[:, start:start + b], w) for k, (s, w) in full.items()}
    return rows, head.contrastive_scores(text_all, audio_loc)


def training_loss(model: RetrievalModel, batch: dict[str, Any], temperature: float,
                  ctx: DistContext | None = None, same_clip: str = "positive") -> dict[str, torch.Tensor]:
    """This process's share L_r of the loss of the global batch (the whole loss with one process).

    batch: "audio" [b, T] waveforms (T beyond the encoder's longest input: encoded in segments, those
    holding audio decided by the optional "audio_samples" [b]), "caption" b strings, "clip_index" [b]
    clip ids (pairs of one clip are never each other's negatives: further positives with
    `same_clip="positive"`, left out with "exclude"; hade.losses), optionally "aux": one auxiliary
    caption (or None) per clip, for HCI+AC.
    Every loss term sees the same clip ids: the NT-Xent of each contrastive score matrix and the head's
    auxiliary losses (`aux_losses(pairs=ClipPairs(ids, same_clip))`).
    Returns {"nt_xent<suffix>"..., aux losses..., "loss"}: scalar tensors, "loss" their sum."""
    ctx = ctx or DistContext()
    audio = model.encode_audio(batch["audio"].to(model.device), batch.get("aux"), batch.get("audio_samples"))
    text = model.encode_text(batch["caption"])
    ids = batch["clip_index"].to(model.device)
    text_all, audio_all, ids_all = gather_reprs(text, ctx), gather_reprs(audio, ctx), gather_tensor(ids, ctx)
    b = ids.shape[0]
    start = ctx.rank * b
    rows, cols = _score_shares(model.head, text_all, audio_all, start, b, ids_all.shape[0])
    losses = {f"nt_xent{suffix}": weight * nt_xent_partial(r.float(), cols[suffix][0].float(), temperature,
                                                            ids_all, start, same_clip)
              for suffix, (r, weight) in rows.items()}
    for name, value in model.head.aux_losses(text_all, audio_all, ClipPairs(ids_all, same_clip)).items():
        losses[name] = value / ctx.world_size
    losses["loss"] = sum(losses.values())
    return losses


class ContrastiveObjective(nn.Module):
    """What the trainer minimises: `model` and the loss's temperature τ. DDP wraps this module (not the
    model), so the whole loss (encoders, gathering, scoring) runs inside its forward."""

    def __init__(self, model: RetrievalModel, temperature: float, ctx: DistContext | None = None,
                 same_clip: str = "positive") -> None:
        super().__init__()
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise InputError(f"temperature: expected a number > 0, got {temperature!r}")
        if same_clip not in SAME_CLIP_MODES:
            raise InputError(f"same_clip: expected one of {list(SAME_CLIP_MODES)}, got {same_clip!r}")
        self.model = model
        self.temperature = float(temperature)
        self.same_clip = same_clip
        self.ctx = ctx or DistContext()

    @property
    def backward_scale(self) -> int:
        """W: each rank back-propagates W·L_r (see the module docstring)."""
        return self.ctx.world_size

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return training_loss(self.model, batch, self.temperature, self.ctx, self.same_clip)
