"""Pre-norm Transformer block of timm's Vision Transformer (the blocks of PaSST), with the same module and
parameter names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``) so that
checkpoints map one to one."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hade.models.encoders.swin import DropPath, Mlp  # timm's, shared with the Swin blocks (same names)
from hade.models.encoders.types import AudioLevels


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection; [B, N, C] -> [B, N, C]."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class Block(nn.Module):
    """x + attn(norm1(x)), then x + mlp(norm2(x)); LayerNorm eps 1e-6 as timm's ViT."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


__all__ = ["Attention", "Block"]


class ViTLevels:
    """The encoder contract of a ViT-style audio encoder (PaSST, BEATs), written once: its levels are the
    chosen blocks of `config.levels` (default 4/8/12), each matched with the text block at the same relative
    depth. The encoder sets `config` (with `levels`, `embed_dim`, `depth`, `max_samples`, `sample_rate`)
    and `grad_checkpointing`; `family` names it in explanations ("PaSST block 8")."""

    family: str = ""

    @staticmethod
    def levels_for(config) -> AudioLevels:
        """The chosen blocks (default 4/8/12), each matched with the text block at the same relative depth."""
        return AudioLevels.vit_blocks(config.levels, config.embed_dim, config.depth)

    @property
    def levels(self) -> AudioLevels:
        return self.levels_for(self.config)

    def level_name(self, level: int) -> str:
        """Label of level `level` (1-based) for explanations (the encoder contract that `hade.explain` reads)."""
        return f"{self.family} {self.levels.names[int(level) - 1]}"

    @property
    def max_samples(self) -> int:
        return self.config.max_samples

    @property
    def max_seconds(self) -> float:
        return self.config.max_samples / self.config.sample_rate

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in backward (saves memory during training)."""
        self.grad_checkpointing = enabled
