"""Contrastive objectives."""
from __future__ import annotations

import torch


def nt_xent(scores: torch.Tensor, temperature: float, clip_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric NT-Xent of HADE eq. (5) on a batch score matrix.

    scores: [B, B], scores[i, j] = S(text_i, audio_j); pair (i, i) is the positive.
    clip_ids: [B] optional; entries (i, j), i != j, with the same clip id are other captions of the same
        clip and are removed from the denominators (they are not negatives).
    Returns L_S = -(1/B) (Σ_i log softmax_j(S_ij/τ)[i] + Σ_i log softmax_j(S_ji/τ)[i]) — the paper's sum of
    both directions divided by B.
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"nt_xent: expected a square [B, B] score matrix, got {tuple(scores.shape)}")
    logits = scores / temperature
    if clip_ids is not None:
        same = clip_ids[:, None] == clip_ids[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(scores.shape[0], device=scores.device)
    t2a = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
    a2t = torch.nn.functional.cross_entropy(logits.T, target, reduction="sum")
    return (t2a + a2t) / scores.shape[0]


def nt_xent_partial(rows: torch.Tensor, cols: torch.Tensor, temperature: float, clip_ids: torch.Tensor | None = None,
                    start: int = 0) -> torch.Tensor:
    """One process's share of `nt_xent` on a global batch of B pairs split across processes.

    rows: [b, B] scores of the local texts (global positions start..start+b-1) against all B audios;
    cols: [B, b] scores of all B texts against the local audios; clip_ids: [B] global clip ids.
    Returns (Σ_local rows CE_t2a + Σ_local columns CE_a2t) / B, so that the shares of all processes sum
    to nt_xent on the full [B, B] matrix (rows = cols = scores, start = 0 gives nt_xent itself).
    """
    b, total = rows.shape
    if cols.shape != (total, b):
        raise ValueError(f"nt_xent_partial: rows {tuple(rows.shape)} and cols {tuple(cols.shape)} do not match")
    target = torch.arange(start, start + b, device=rows.device)
    row_logits, col_logits = rows / temperature, cols.T / temperature  # [b, B] each
    if clip_ids is not None:
        same = clip_ids[start:start + b, None] == clip_ids[None, :]
        same[torch.arange(b, device=rows.device), target] = False
        row_logits = row_logits.masked_fill(same, float("-inf"))
        col_logits = col_logits.masked_fill(same, float("-inf"))
    t2a = torch.nn.functional.cross_entropy(row_logits, target, reduction="sum")
    a2t = torch.nn.functional.cross_entropy(col_logits, target, reduction="sum")
    return (t2a + a2t) / total
