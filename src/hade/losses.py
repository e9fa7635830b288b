"""Contrastive objectives.

Pairs of one clip in a batch
----------------------------
Row i of a batch score matrix is text i, column j audio j, and pair (i, i) is a matched pair. When two pairs
of one clip share a batch (two captions of one file), the off-diagonal entries (i, j) with the same clip id are
true matches too. `same_clip` says what the loss does with them:

* ``"positive"`` (default): they are further positives, as in the DCASE 2025 task 6 baseline
  (CPJKU/dcase2025_task6_baseline, ``d25_t6/retrieval_module.py``, ``training_step``: positives
  ``I = paths == paths.T`` by file, loss ``-0.5 (mean_{(a,t) ∈ I} log P(a|t) + mean_{(a,t) ∈ I} log P(t|a))``
  with both softmaxes over the whole batch, other positives included). That form takes the mean over *all
  positive pairs* of the matrix, not a per-row mean over each row's positives: with P the set of positive
  pairs (diagonal included),

      L_S = -(1/|P|) (Σ_{(i,j) ∈ P} log softmax_k(S_ik/τ)[j] + Σ_{(i,j) ∈ P} log softmax_k(S_kj/τ)[i]),

  i.e. 2 × the baseline's value, keeping hade's scale of HADE eq. (5) (both directions summed, divided by B).
  Without duplicates P is the diagonal, |P| = B, and this is exactly eq. (5) (the same floating-point value:
  the diagonal terms are computed as before and the extra terms are an empty sum).
* ``"exclude"``: they are removed from the denominators (neither positives nor negatives), the DCASE 2023
  baseline's choice and hade's behaviour before the multi-positive loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hade.config import SAME_CLIP_MODES


@dataclass(frozen=True)
class ClipPairs:
    """Which pairs of a batch belong to one clip: `clip_ids` [B] (None: all clips distinct) and what the losses
    make of same-clip pairs (`mode`, one of SAME_CLIP_MODES; see the module docstring)."""

    clip_ids: torch.Tensor | None = None
    mode: str = "positive"

    def __post_init__(self) -> None:
        check_same_clip(self.mode)

    def positives(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        """[n, n] bool: True where text i and audio j are a matched pair (the diagonal, and in "positive" mode
        every other pair of the same clip)."""
        eye = torch.eye(n, dtype=torch.bool, device=device)
        if self.clip_ids is None or self.mode != "positive":
            return eye
        ids = self.clip_ids.to(device)
        return (ids[:, None] == ids[None, :]) | eye


def check_same_clip(mode: str) -> str:
    if mode not in SAME_CLIP_MODES:
        raise ValueError(f"same_clip: expected one of {list(SAME_CLIP_MODES)}, got {mode!r}")
    return mode


def nt_xent(scores: torch.Tensor, temperature: float, clip_ids: torch.Tensor | None = None,
            same_clip: str = "positive") -> torch.Tensor:
    """Symmetric NT-Xent of HADE eq. (5) on a batch score matrix, with several positives per row when pairs of
    one clip share the batch (module docstring).

    scores: [B, B], scores[i, j] = S(text_i, audio_j); pair (i, i) is a positive.
    clip_ids: [B] optional clip id of each pair; entries (i, j), i != j, with the same id are further positives
        (`same_clip="positive"`) or left out of the denominators (`"exclude"`).
    Returns a scalar: without duplicates L_S = -(1/B) (Σ_i log softmax_j(S_ij/τ)[i] + Σ_i log softmax_j(S_ji/τ)[i]).
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"nt_xent: expected a square [B, B] score matrix, got {tuple(scores.shape)}")
    return nt_xent_partial(scores, scores, temperature, clip_ids, 0, same_clip)


def _extra_positive_terms(logits: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
    """-Σ log softmax over the rows of `logits` [b, B] at the extra positives `extra` [b, B] (0 when none)."""
    return -torch.log_softmax(logits, dim=-1)[extra].sum()


def nt_xent_partial(rows: torch.Tensor, cols: torch.Tensor, temperature: float, clip_ids: torch.Tensor | None = None,
                    start: int = 0, same_clip: str = "positive") -> torch.Tensor:
    """One process's share of `nt_xent` on a global batch of B pairs split across processes.

    rows: [b, B] scores of the local texts (global positions start..start+b-1) against all B audios;
    cols: [B, b] scores of all B texts against the local audios; clip_ids: [B] global clip ids.
    Returns (Σ over the local rows' positives of -log P(a|t) + Σ over the local columns' positives of
    -log P(t|a)) / |P|, |P| the positives of the global batch (B without duplicates), so that the shares of all
    processes sum to nt_xent on the full [B, B] matrix (rows = cols = scores, start = 0 gives nt_xent itself).
    """
    check_same_clip(same_clip)
    b, total = rows.shape
    if cols.shape != (total, b):
        raise ValueError(f"nt_xent_partial: rows {tuple(rows.shape)} and cols {tuple(cols.shape)} do not match")
    target = torch.arange(start, start + b, device=rows.device)
    row_logits, col_logits = rows / temperature, cols.T / temperature  # [b, B] each
    count: int | torch.Tensor = total
    extra = None
    if clip_ids is not None:
        same = clip_ids[start:start + b, None] == clip_ids[None, :]
        same[torch.arange(b, device=rows.device), target] = False
        if same_clip == "exclude":
            row_logits = row_logits.masked_fill(same, float("-inf"))
            col_logits = col_logits.masked_fill(same, float("-inf"))
        else:
            extra = same
            count = (clip_ids[:, None] == clip_ids[None, :]).sum()
    t2a = torch.nn.functional.cross_entropy(row_logits, target, reduction="sum")
    a2t = torch.nn.functional.cross_entropy(col_logits, target, reduction="sum")
    if extra is not None:
        t2a = t2a + _extra_positive_terms(row_logits, extra)
        a2t = a2t + _extra_positive_terms(col_logits, extra)
    return (t2a + a2t) / count
