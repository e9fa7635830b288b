"""Outputs of the two encoders: every level's token sequence, as THA and other heads need them."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AudioFeatures:
    """Per-stage audio tokens of a Swin/HTSAT encoder.

    stages: one tensor per Swin stage (index 0 = stage 1), each [B, M_s, C_s], tokens in row-major
        order of the stage's (H_s, W_s) grid, after the stage's blocks and before patch merging;
        the last one is after the final LayerNorm.
    grids: (H_s, W_s) of each stage.
    pooled: [B, C_4] clip vector (average over the final stage's tokens, HTSAT's latent_output).
    token_seconds: one tensor per stage [M_s, 2] with the (start, end) time in seconds of the input
        that each token covers (for explanations); independent of the batch.
    aux_text: optional features of one auxiliary (machine-generated) caption per clip, [B, N_aux, H] per
        block, encoded by the same text encoder (HCI+AC); None when no auxiliary captions were given.
        Heads that do not use auxiliary captions ignore it.
    """

    stages: list[torch.Tensor]
    grids: list[tuple[int, int]]
    pooled: torch.Tensor
    token_seconds: list[torch.Tensor]
    aux_text: TextFeatures | None = None


@dataclass
class TextFeatures:
    """Per-block BERT token states.

    layers: one tensor per Transformer block (index 0 = block 1), each [B, N, H].
    mask: [B, N] bool, True on real tokens (CLS, words, SEP), False on padding.
    pooled: [B, H] sentence vector of the last block (CLS token or masked mean, per config).
    phrase_index: optional [B, N] long, the phrase (0, 1, ...) each token belongs to, -1 for tokens in no
        phrase (special tokens, padding, separators); filled by `RetrievalModel` for heads with
        `needs_phrases` (HCI), else None.
    """

    layers: list[torch.Tensor]
    mask: torch.Tensor
    pooled: torch.Tensor
    phrase_index: torch.Tensor | None = None
