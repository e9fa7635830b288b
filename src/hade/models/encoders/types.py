"""Outputs of the two encoders: every level's token sequence, as THA and other heads need them, and the
declaration of an audio encoder's levels (`AudioLevels`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AudioLevels:
    """What an audio encoder offers the token heads (THA, co-attention, HCI): its levels, declared once.

    A level is one token sequence of the encoder (`AudioFeatures.stages[l - 1]` for level l, 1-based):
    HTSAT's levels are its Swin stages; a ViT-style encoder (PaSST, BEATs) offers the outputs of chosen
    blocks (default 4/8/12). Heads read levels only through this record, never from the encoder's class.

    names: one label per level ("stage 2", "block 8"), for listings and explanations.
    dims: token width of each level; the pooled clip vector has the width of the last level.
    aligned: the levels THA aligns with text blocks by default (HTSAT stages 2/3/4, a ViT's chosen blocks).
    text_blocks_12 / text_blocks_6: the text blocks matched with `aligned` for a 12-block (the paper's
        BERT) and a 6-block (MiniLM) text encoder; other depths scale the 12-block match.
    """

    names: tuple[str, ...]
    dims: tuple[int, ...]
    aligned: tuple[int, ...]
    text_blocks_12: tuple[int, ...]
    text_blocks_6: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.dims or len(self.names) != len(self.dims):
            raise ValueError(f"AudioLevels: {len(self.names)} names for {len(self.dims)} levels")
        if not self.aligned or any(not 1 <= lv <= len(self.dims) for lv in self.aligned):
            raise ValueError(f"AudioLevels: aligned levels {self.aligned} outside 1..{len(self.dims)}")
        if not len(self.aligned) == len(self.text_blocks_12) == len(self.text_blocks_6):
            raise ValueError("AudioLevels: aligned, text_blocks_12 and text_blocks_6 must be equally long")

    @classmethod
    def swin_stages(cls, dims: list[int] | tuple[int, ...]) -> "AudioLevels":
        """HTSAT's declaration: every stage is a level; THA aligns the last three (stages 2/3/4 ↔ BERT blocks
        4/10/12, MiniLM blocks 2/4/6, as in the paper)."""
        n = len(dims)
        aligned = tuple(range(max(1, n - 2), n + 1))
        return cls(tuple(f"stage {s}" for s in range(1, n + 1)), tuple(int(d) for d in dims), aligned,
                   (4, 10, 12)[-len(aligned):], (2, 4, 6)[-len(aligned):])

    @classmethod
    def vit_blocks(cls, blocks: list[int] | tuple[int, ...], dim: int, depth: int) -> "AudioLevels":
        """A ViT's declaration: the chosen blocks (1-based) are the levels, all aligned by THA, each matched
        with the text block at the same relative depth (blocks 4/8/12 of 12 ↔ text blocks 4/8/12, or 2/4/6)."""
        blocks = tuple(int(b) for b in blocks)
        return cls(tuple(f"block {b}" for b in blocks), (int(dim),) * len(blocks), tuple(range(1, len(blocks) + 1)),
                   _scaled(blocks, depth, 12), _scaled(blocks, depth, 6))

    def text_blocks(self, text_layers: int) -> tuple[int, ...]:
        """The text blocks matched with `aligned` for a text encoder of `text_layers` blocks."""
        if text_layers == 12:
            return self.text_blocks_12
        if text_layers == 6:
            return self.text_blocks_6
        return _scaled(self.text_blocks_12, 12, text_layers)

    @property
    def token_level(self) -> int:
        """The level a single-level token head (HCI) reads by default: the second-last aligned one (HTSAT
        stage 3, the middle chosen block of a ViT)."""
        return self.aligned[-2] if len(self.aligned) > 1 else self.aligned[-1]


def _scaled(blocks: tuple[int, ...], depth: int, layers: int) -> tuple[int, ...]:
    """Blocks of a `depth`-block stack moved to the same relative depth of a `layers`-block stack."""
    return tuple(max(1, min(layers, round(b * layers / depth))) for b in blocks)


@dataclass
class AudioFeatures:
    """Per-level audio tokens of an audio encoder (the levels its `AudioLevels` declares).

    stages: one tensor per level (index 0 = level 1), each [B, M_l, C_l], tokens in row-major order of the
        level's (H_l, W_l) grid (frequency-like rows, time-like columns). HTSAT: each Swin stage after its
        blocks and before patch merging, the last after the final LayerNorm. ViT-style encoders: the patch
        tokens (no class/distillation tokens) after each chosen block, the last block after the final norm.
    grids: (H_l, W_l) of each level.
    pooled: [B, C_L] clip vector (HTSAT: average over the final stage's tokens, its latent_output; PaSST:
        the mean of its class and distillation tokens; BEATs: the mean of its last tokens).
    token_seconds: one tensor per level [M_l, 2] with the (start, end) time in seconds of the input
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
