"""The one padding rule for token tensors: right-pad dimension 1 with zeros (False in boolean masks).

Batches of token features differ in length (dimension 1); evaluation and the index concatenate them
(`hade.models.heads.reprs.cat_reprs`), and distributed training gathers them across ranks
(`hade.train.distributed.gather_reprs`). Both pad the same way, with these functions."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_dim1(t: torch.Tensor, length: int) -> torch.Tensor:
    """`t` [B, L, ...] right-padded to [B, length, ...] (zeros, or False for bool); tensors of rank < 2 and
    those already `length` long are returned as they are. `length` < L is a ValueError."""
    if t.dim() < 2 or t.shape[1] == length:
        return t
    if length < t.shape[1]:
        raise ValueError(f"pad_dim1: cannot pad length {t.shape[1]} down to {length}")
    pad = [0, 0] * (t.dim() - 2) + [0, length - t.shape[1]]
    return F.pad(t, pad, value=False if t.dtype == torch.bool else 0)


def pad_to_longest(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors with dimension 1 right-padded to the longest among them (rank >= 2; others unchanged)."""
    if not tensors or tensors[0].dim() < 2:
        return list(tensors)
    longest = max(t.shape[1] for t in tensors)
    return [pad_dim1(t, longest) for t in tensors]


__all__ = ["pad_dim1", "pad_to_longest"]
