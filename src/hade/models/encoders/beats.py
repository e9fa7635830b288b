"""BEATs (Chen et al., "BEATs: Audio Pre-Training with Acoustic Tokenizers", 2023) as a hade audio encoder.

Facts from the paper and the public implementations (unilm/beats, ESPnet's ``beats_encoder.py``):
* front end: the waveform scaled to 16-bit range (x 2^15), Kaldi fbank (16 kHz, 25 ms Povey window, 10 ms
  shift, 128 bins, dither 0; :func:`hade.models.encoders.kaldi.fbank`), normalised as
  (fbank - 15.41663) / (2 x 6.55582);
* 16 x 16 patches (no conv bias) of the [time, mel] image -> 512 channels, tokens in time-major order
  (8 frequency patches per time step) -> LayerNorm(512) -> Linear 512 -> 768;
* a convolutional position embedding (Conv1d, kernel 128, 16 groups, weight norm over the kernel axis,
  last output dropped, GELU) added to the tokens, then LayerNorm (post-norm encoder);
* 12 post-norm blocks of 768 (12 heads, FFN 3072, GELU) with deep norm (residual x (2 x 12)^(1/4));
* T5-style bucketed relative position bias (320 buckets, max distance 800) computed by the first block and
  shared, gated per block and head by the query (``grep_linear``, ``grep_a``): the GRU-like gate of WavLM.
* full sequences are attended; this preset holds up to 16 s (100 time patches: relative distances up to 800
  tokens), longer input is windowed by the caller (the index's windows).
Masking (BEATs' pre-training) is not part of the encoder; training adds no patch dropping, so inference
and training see the same tokens (dropout aside).

Module and parameter names follow the released checkpoints (``patch_embedding``, ``layer_norm``,
``post_extract_proj``, ``encoder.pos_conv``, ``encoder.layer_norm``, ``encoder.layers.N.self_attn.*``,
``self_attn_layer_norm``, ``fc1``, ``fc2``, ``final_layer_norm``), mapped in :mod:`hade.models.convert_audio`.
Equal to ESPnet's BEATs encoder on random weights (tests/models/encoders/test_beats_reference.py; ESPnet is
installed test-only without its dependencies, docs/encoders.md), and tested against the documented layout of
the iter3 checkpoints.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from hade.errors import InputError
from hade.models.encoders.configs import EncoderConfig, check_levels, check_positive, check_rates
from hade.models.encoders.kaldi import fbank
from hade.models.encoders.types import AudioFeatures
from hade.models.encoders.vit import ViTLevels
from hade.models.presets import PresetMapping

FBANK_MEAN, FBANK_STD = 15.41663, 6.55582  # BEATs' fbank normalisation (AudioSet statistics)


@dataclass
class BEATsConfig(EncoderConfig):
    """Hyper-parameters of :class:`BEATsEncoder`; the defaults are BEATs iter3 (AudioSet-2M, 16 kHz)."""

    sample_rate: int = 16000
    mel_bins: int = 128
    max_frames: int = 1600
    patch_size: int = 16
    patch_dim: int = 512
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    conv_pos: int = 128
    conv_pos_groups: int = 16
    num_buckets: int = 320
    max_distance: int = 800
    deep_norm: bool = True
    levels: list[int] = field(default_factory=lambda: [4, 8, 12])
    dropout: float = 0.0
    attention_dropout: float = 0.0

    training_only: ClassVar[frozenset[str]] = frozenset({"dropout", "attention_dropout"})

    def __post_init__(self) -> None:
        self.validate()

    @property
    def freq_patches(self) -> int:
        return self.mel_bins // self.patch_size

    @property
    def max_samples(self) -> int:
        """Longest waveform of at most `max_frames` Kaldi frames (25 ms windows, 10 ms shift)."""
        shift, window = self.sample_rate // 100, self.sample_rate * 25 // 1000
        return (self.max_frames - 1) * shift + window

    @property
    def min_samples(self) -> int:
        """Shortest waveform with one patch of frames."""
        shift, window = self.sample_rate // 100, self.sample_rate * 25 // 1000
        return (self.patch_size - 1) * shift + window

    def validate(self) -> None:
        owner = "BEATsConfig"
        check_positive(owner, self, ("sample_rate", "mel_bins", "max_frames", "patch_size", "patch_dim", "embed_dim",
                                     "depth", "num_heads", "ffn_dim", "conv_pos", "conv_pos_groups", "num_buckets",
                                     "max_distance"))
        if self.mel_bins % self.patch_size or self.max_frames < self.patch_size:
            raise InputError(f"invalid {owner}: mel_bins must be a multiple of patch_size and max_frames >= it")
        if self.embed_dim % self.num_heads or self.embed_dim % self.conv_pos_groups:
            raise InputError(f"invalid {owner}: embed_dim {self.embed_dim} must divide by num_heads and conv_pos_groups")
        if self.num_buckets < 4 or 2 * self.max_distance <= self.num_buckets:
            raise InputError(f"invalid {owner}: need num_buckets >= 4 and max_distance > num_buckets / 2")
        self.levels = check_levels(owner, self.levels, self.depth)
        check_rates(owner, self, ("dropout", "attention_dropout"))


BEATS_PRESETS: Mapping[str, BEATsConfig] = PresetMapping("beats", BEATsConfig.from_dict)


def relative_buckets(query_len: int, key_len: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """T5's bidirectional buckets of the distances key - query, [query_len, key_len] long: half the buckets per
    direction, exact below a quarter of them, logarithmic up to `max_distance`, the last bucket beyond."""
    rel = torch.arange(key_len)[None, :] - torch.arange(query_len)[:, None]
    half = num_buckets // 2
    exact = half // 2
    base = (rel > 0).long() * half
    rel = rel.abs()
    large = exact + (torch.log(rel.float().clamp_min(1) / exact) / math.log(max_distance / exact)
                     * (half - exact)).long()
    return base + torch.where(rel < exact, rel, large.clamp_max(half - 1))


class PosConv(nn.Module):
    """Convolutional position embedding: weight-normed grouped Conv1d over time, last output dropped, GELU.
    [B, N, C] -> [B, N, C]. Parameters `weight_g` [1, 1, K], `weight_v` [C, C/groups, K], `bias` [C] as in
    the checkpoints (weight norm over the kernel axis)."""

    def __init__(self, dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.kernel, self.groups = kernel, groups
        v = torch.randn(dim, dim // groups, kernel) * math.sqrt(4.0 / (kernel * dim))
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.norm(dim=(0, 1), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_g * self.weight_v / self.weight_v.norm(dim=(0, 1), keepdim=True)
        y = F.conv1d(x.transpose(1, 2), weight, self.bias, padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:
            y = y[..., :-1]
        return F.gelu(y).transpose(1, 2)


class GatedRelativeAttention(nn.Module):
    """Self-attention with a relative position bias gated per head by the query (BEATs / WavLM).

    bias' = (gate_a * (gate_b * grep_a - 1) + 2) * bias, with gate_a, gate_b = sigmoid of the two halves of
    `grep_linear(q_head)` (8 outputs summed in groups of 4), q_head the head's projected query. [B, N, C] ->
    [B, N, C]; `position_bias` [H, N, N] (the first block's `relative_attention_bias`)."""

    def __init__(self, dim: int, num_heads: int, dropout: float, has_bias_table: bool, num_buckets: int) -> None:
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.grep_linear = nn.Linear(dim // num_heads, 8)
        self.grep_a = nn.Parameter(torch.ones(1, num_heads, 1, 1))
        if has_bias_table:
            self.relative_attention_bias = nn.Embedding(num_buckets, num_heads)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)  # [B, H, N, d]

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        gate_a, gate_b = torch.sigmoid(self.grep_linear(q).view(b, self.num_heads, n, 2, 4).sum(-1)).chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0  # [B, H, N, 1]
        bias = gate * position_bias.unsqueeze(0)  # [B, H, N, N]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class Layer(nn.Module):
    """Post-norm block with deep norm: x = LN(alpha x + attn(x)); x = LN(alpha x + fc2(gelu(fc1(x))))."""

    def __init__(self, c: BEATsConfig, first: bool) -> None:
        super().__init__()
        self.self_attn = GatedRelativeAttention(c.embed_dim, c.num_heads, c.attention_dropout, first, c.num_buckets)
        self.self_attn_layer_norm = nn.LayerNorm(c.embed_dim)
        self.fc1, self.fc2 = nn.Linear(c.embed_dim, c.ffn_dim), nn.Linear(c.ffn_dim, c.embed_dim)
        self.final_layer_norm = nn.LayerNorm(c.embed_dim)
        self.drop = nn.Dropout(c.dropout)
        self.alpha = (2 * c.depth) ** 0.25 if c.deep_norm else 1.0

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_layer_norm(self.alpha * x + self.drop(self.self_attn(x, position_bias)))
        return self.final_layer_norm(self.alpha * x + self.drop(self.fc2(F.gelu(self.fc1(x)))))


class Encoder(nn.Module):
    def __init__(self, c: BEATsConfig) -> None:
        super().__init__()
        self.pos_conv = PosConv(c.embed_dim, c.conv_pos, c.conv_pos_groups)
        self.layer_norm = nn.LayerNorm(c.embed_dim)
        self.layers = nn.ModuleList(Layer(c, first=i == 0) for i in range(c.depth))


class BEATsEncoder(ViTLevels, nn.Module):
    """BEATs: waveform ``[B, T_samples]`` at 16 kHz -> :class:`AudioFeatures` (tokens of the chosen blocks)."""

    family = "BEATs"

    def __init__(self, config: BEATsConfig) -> None:
        super().__init__()
        config.validate()
        self.config = c = config
        self.patch_embedding = nn.Conv2d(1, c.patch_dim, kernel_size=c.patch_size, stride=c.patch_size, bias=False)
        self.layer_norm = nn.LayerNorm(c.patch_dim)
        self.post_extract_proj = nn.Linear(c.patch_dim, c.embed_dim)
        self.encoder = Encoder(c)
        self.drop = nn.Dropout(c.dropout)
        self.grad_checkpointing = False

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """Normalised Kaldi fbank [B, frames, mel_bins] (in float32, or float64 for a float64 waveform)."""
        x = waveform if waveform.dtype == torch.float64 else waveform.float()
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            bank = fbank(x * 2**15, self.config.sample_rate, self.config.mel_bins)
        return (bank - FBANK_MEAN) / (2 * FBANK_STD)

    def _check_length(self, num_samples: int) -> None:
        c = self.config
        if num_samples > c.max_samples:
            raise InputError(f"audio clip too long for this BEATs config: {num_samples} samples "
                             f"({num_samples / c.sample_rate:.2f} s), at most {c.max_samples} "
                             f"({c.max_samples / c.sample_rate:.2f} s); the caller must crop or window the audio")
        if num_samples < c.min_samples:
            raise InputError(f"audio clip too short: {num_samples} samples; BEATs needs at least {c.min_samples}")

    def token_seconds(self, num_samples: int, steps: int) -> torch.Tensor:
        """[steps * freq_patches, 2] (start, end) seconds, time-major: time patch t covers frames
        16t .. 16t + 15 (frame k spans 10k .. 10k + 25 ms)."""
        c = self.config
        start = torch.arange(steps, dtype=torch.float64) * c.patch_size * 0.01
        end = torch.clamp(start + (c.patch_size - 1) * 0.01 + 0.025, max=num_samples / c.sample_rate)
        return torch.stack([start, end], -1).repeat_interleave(c.freq_patches, dim=0).to(torch.float32)

    def forward(self, waveform: torch.Tensor) -> AudioFeatures:
        if waveform.dim() != 2:
            raise InputError(f"BEATsEncoder expects a [batch, samples] waveform, got shape {tuple(waveform.shape)}")
        c = self.config
        self._check_length(waveform.shape[-1])
        patches = self.patch_embedding(self.features(waveform).unsqueeze(1))  # [B, 512, T', F']
        steps = patches.shape[2]
        x = self.post_extract_proj(self.layer_norm(patches.flatten(2).transpose(1, 2)))  # [B, T'F', C]
        x = self.encoder.layer_norm(x + self.encoder.pos_conv(x))
        x = self.drop(x)
        buckets = relative_buckets(x.shape[1], x.shape[1], c.num_buckets, c.max_distance).to(x.device)
        position_bias = self.encoder.layers[0].self_attn.relative_attention_bias(buckets).permute(2, 0, 1)
        wanted, stages = set(c.levels), []
        for i, layer in enumerate(self.encoder.layers, start=1):
            if self.grad_checkpointing and self.training:
                x = checkpoint(layer, x, position_bias, use_reentrant=False)
            else:
                x = layer(x, position_bias)
            if i in wanted:
                stages.append(x)
        seconds = self.token_seconds(waveform.shape[-1], steps).to(waveform.device)
        return AudioFeatures(stages=stages, grids=[(steps, c.freq_patches)] * len(stages), pooled=x.mean(dim=1),
                             token_seconds=[seconds] * len(stages))


__all__ = ["BEATS_PRESETS", "BEATsConfig", "BEATsEncoder", "relative_buckets"]
