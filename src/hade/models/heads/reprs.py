"""Helpers for per-item representations: dicts of tensors whose first dimension indexes items.

Heads return such dicts from `text_repr` / `audio_repr`; evaluation and the index concatenate and
slice them without knowing what they hold. Token tensors may differ in length (dimension 1) between
batches: `cat_reprs` pads them, with zeros (and False in boolean masks).
"""
from __future__ import annotations

import torch

from hade.utils.padding import pad_to_longest

Reprs = dict[str, torch.Tensor]


def cat_reprs(parts: list[Reprs]) -> Reprs:
    """Concatenate along items; tensors of rank >= 2 whose dim 1 differs are right-padded to the longest."""
    if not parts:
        raise ValueError("cat_reprs: nothing to concatenate")
    return {key: torch.cat(pad_to_longest([p[key] for p in parts]), 0) for key in parts[0]}


def slice_reprs(reprs: Reprs, start: int, stop: int) -> Reprs:
    return {k: v[start:stop] for k, v in reprs.items()}


def index_reprs(reprs: Reprs, index: torch.Tensor) -> Reprs:
    return {k: v[index] for k, v in reprs.items()}


def reprs_to(reprs: Reprs, device: torch.device | str) -> Reprs:
    return {k: v.to(device) for k, v in reprs.items()}


def num_items(reprs: Reprs) -> int:
    return next(iter(reprs.values())).shape[0]
