"""Swin Transformer building blocks with HTS-AT's module and parameter names.

Names follow ``RetroCirce/HTS-Audio-Transformer`` (``model/htsat.py``) so that public HTSAT/CLAP
checkpoints load with a prefix map only: ``blocks.{b}.{norm1, attn.qkv, attn.proj,
attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2}``, buffers ``attn.relative_position_index``
and ``attn_mask`` (shifted blocks only), ``downsample.{norm, reduction}``.

Tokens travel as ``[B, H*W, C]`` in row-major (H, W) order. Window attention runs through
``torch.nn.functional.scaled_dot_product_attention`` with the relative position bias plus the
shifted-window mask passed as an additive ``attn_mask``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Value the reference puts on attention logits between tokens of different shifted-window regions.
# Kept (instead of -inf) so the attn_mask buffer equals the one stored in public checkpoints.
MASK_VALUE = -100.0


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B, nW, ws*ws, C]`` with windows in row-major order."""
    b, h, w, c = x.shape
    ws = window_size
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // ws) * (w // ws), ws * ws, c)


def window_reverse(windows: torch.Tensor, window_size: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B, nW, ws*ws, C]`` -> ``[B, H, W, C]``."""
    b, _, _, c = windows.shape
    ws = window_size
    x = windows.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_position_index(window_size: int) -> torch.Tensor:
    """``[N, N]`` (N = ws²) index into the ``(2ws-1)²`` relative position bias table (Swin layout)."""
    ws = window_size
    rows, cols = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()])  # [2, N]
    rel = coords[:, :, None] - coords[:, None, :]  # [2, N, N]
    rel_h = rel[0] + (ws - 1)
    rel_w = rel[1] + (ws - 1)
    return rel_h * (2 * ws - 1) + rel_w


def shifted_window_mask(h: int, w: int, window_size: int, shift_size: int) -> torch.Tensor:
    """``[nW, N, N]`` additive mask (0 / ``MASK_VALUE``) for the cyclically shifted windows."""
    region = torch.zeros(h, w)
    bounds = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    label = 0
    for hs in bounds:
        for wsl in bounds:
            region[hs, wsl] = label
            label += 1
    regions = window_partition(region.view(1, h, w, 1), window_size).view(-1, window_size * window_size)
    diff = regions[:, None, :] - regions[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, MASK_VALUE)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``drop_prob`` (training only)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def init_timm_weights(module: nn.Module) -> None:
    """timm's initialisation of Swin and ViT: truncated normal (std 0.02) linear weights, zero biases, unit
    LayerNorms (`module.apply(init_timm_weights)`)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ``ws × ws`` windows with a learned relative position bias."""

    def __init__(
        self,
        dim: int,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_drop = float(attn_drop)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def relative_position_bias(self) -> torch.Tensor:
        """``[heads, N, N]`` bias gathered from the table."""
        n = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def attention_mask(self, mask: torch.Tensor | None, num_windows: int) -> torch.Tensor:
        """``[nW, heads, N, N]`` additive mask: relative position bias (+ shifted-window mask)."""
        bias = self.relative_position_bias().unsqueeze(0)  # [1, heads, N, N]
        if mask is not None:
            return bias + mask.unsqueeze(1).to(bias.dtype)
        return bias.expand(num_windows, -1, -1, -1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: ``[B, nW, N, C]`` window tokens; mask: ``[nW, N, N]`` additive or None."""
        b, nw, n, c = x.shape
        h, hd = self.num_heads, self.head_dim
        # (window, head) pairs share one attention "head" axis so the [nW*heads, N, N] mask
        # broadcasts over the batch without being copied B times
        qkv = self.qkv(x).view(b, nw, n, 3, h, hd).permute(3, 0, 1, 4, 2, 5).reshape(3, b, nw * h, n, hd)
        q, k, v = qkv.unbind(0)
        attn_mask = self.attention_mask(mask, nw).reshape(1, nw * h, n, n).to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )  # [B, nW*heads, N, hd]
        out = out.view(b, nw, h, n, hd).transpose(2, 3).reshape(b, nw, n, c)
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention + MLP, pre-norm, residuals with stochastic depth.

    As in Swin, when the grid is not larger than the window, the window is clipped to the grid and
    the shift is disabled.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int = 8,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        h, w = input_resolution
        if min(h, w) <= window_size:
            window_size = min(h, w)
            shift_size = 0
        if h % window_size or w % window_size:
            raise ValueError(f"window {window_size} does not divide the token grid {h}x{w}")
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift {shift_size} must be in [0, window {window_size})")
        self.dim = dim
        self.input_resolution = (h, w)
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        mask = shifted_window_mask(h, w, window_size, shift_size) if shift_size > 0 else None
        self.register_buffer("attn_mask", mask)  # None buffers are not part of the state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.input_resolution
        b, m, c = x.shape
        if m != h * w:
            raise ValueError(f"expected {h * w} tokens ({h}x{w}), got {m}")
        ws, shift = self.window_size, self.shift_size
        y = self.norm1(x).view(b, h, w, c)
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        y = self.attn(window_partition(y, ws), self.attn_mask)
        y = window_reverse(y, ws, h, w)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, m, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2×2 neighbour concat -> LayerNorm(4C) -> Linear(4C, 2C, bias=False); halves H and W."""

    def __init__(self, input_resolution: tuple[int, int], dim: int) -> None:
        super().__init__()
        self.input_resolution = tuple(input_resolution)
        self.dim = dim
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.input_resolution
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        # order (even,even), (odd,even), (even,odd), (odd,odd) as in Swin/HTSAT: the reduction
        # weights of public checkpoints depend on it
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class BasicLayer(nn.Module):
    """One Swin stage: ``depth`` blocks (shift on odd blocks) and an optional PatchMerging."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: list[float] | None = None,
        downsample: bool = False,
    ) -> None:
        super().__init__()
        drop_path = list(drop_path) if drop_path is not None else [0.0] * depth
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.use_checkpoint = False
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                input_resolution,
                num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path[i],
            )
            for i in range(depth)
        )
        self.downsample = PatchMerging(input_resolution, dim) if downsample else None

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (stage output before merging, input of the next stage)."""
        x = self.forward_blocks(x)
        return x, (self.downsample(x) if self.downsample is not None else x)
