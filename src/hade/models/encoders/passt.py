"""PaSST (Koutini et al., "Efficient Training of Audio Transformers with Patchout", 2022) as a hade audio
encoder: waveform -> log-mel (its own front end) -> 16x16 patches at stride 10 with separate frequency and
time position embeddings -> class and distillation tokens -> ViT blocks -> per-level patch tokens and the
pooled clip vector.

Facts taken from the paper and the `hear21passt` package (the reference of the equality test):
* front end (``AugmentMelSTFT`` in eval mode): pre-emphasis [-0.97, 1], centered STFT (n_fft 1024,
  symmetric Hann window of 800 samples, hop 320 at 32 kHz), power, Kaldi mel banks (128 bins, 0 Hz to
  15 kHz), log(x + 1e-5), then (x + 4.5) / 5;
* a 10 s segment is 1000 frames, 12 x 99 patches; shorter input uses the first time position embeddings;
  longer input is windowed by the caller (the index's windows), as for HTSAT;
* the clip vector is the mean of the class and distillation tokens after the final LayerNorm (the input
  of PaSST's classifier);
* structured patchout (whole time columns / frequency rows dropped) and the mel range and masking
  augmentations act only in training; inference is deterministic. Unstructured patchout is not offered.

Module and parameter names equal hear21passt's (`patch_embed.proj`, `cls_token`, `dist_token`,
`new_pos_embed`, `freq_new_pos_embed`, `time_new_pos_embed`, `blocks.N.*`, `norm`), so its checkpoints load
through the explicit key map of :mod:`hade.models.convert_audio`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hade.errors import InputError
from hade.models.encoders.configs import EncoderConfig, check_levels, check_positive, check_rates
from hade.models.encoders.htsat import _drop_stripes
from hade.models.encoders.kaldi import mel_banks
from hade.models.encoders.types import AudioFeatures
from hade.models.encoders.swin import init_timm_weights
from hade.models.encoders.vit import Block, ViTLevels
from hade.models.presets import PresetMapping


@dataclass
class PaSSTConfig(EncoderConfig):
    """Hyper-parameters of :class:`PaSSTEncoder`; the defaults are PaSST-S (AudioSet, 32 kHz, 10 s).

    `max_frames` fixes the time position embeddings (one 10 s segment: 1000 frames, 99 patch columns).
    `levels` are the blocks (1-based) whose tokens the heads may use. `s_patchout_t`/`s_patchout_f`
    (columns/rows dropped), `freqm`/`timem` (mask widths) and `fmin_aug_range`/`fmax_aug_range` (random mel
    range) act in training only; PaSST-S was trained with 40 / 4, 48 / 192 and 10 / 2000.
    """

    sample_rate: int = 32000
    n_fft: int = 1024
    win_length: int = 800
    hop_length: int = 320
    mel_bins: int = 128
    fmin: float = 0.0
    fmax: float = 15000.0
    max_frames: int = 1000
    patch_size: int = 16
    stride: int = 10
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    levels: list[int] = field(default_factory=lambda: [4, 8, 12])
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    s_patchout_t: int = 0
    s_patchout_f: int = 0
    freqm: int = 0
    timem: int = 0
    fmin_aug_range: int = 1
    fmax_aug_range: int = 1

    training_only: ClassVar[frozenset[str]] = frozenset(
        {"drop_rate", "attn_drop_rate", "drop_path_rate", "s_patchout_t", "s_patchout_f", "freqm", "timem",
         "fmin_aug_range", "fmax_aug_range"})

    def __post_init__(self) -> None:
        self.validate()

    @property
    def freq_patches(self) -> int:
        return (self.mel_bins - self.patch_size) // self.stride + 1

    @property
    def time_patches(self) -> int:
        """Patch columns of one full segment (`max_frames`): the number of time position embeddings."""
        return (self.max_frames - self.patch_size) // self.stride + 1

    @property
    def max_samples(self) -> int:
        """Longest waveform of at most `max_frames` frames (1 + (n - 1) // hop after the pre-emphasis)."""
        return self.max_frames * self.hop_length

    @property
    def min_samples(self) -> int:
        """Shortest waveform with one patch column (and enough samples for the STFT's reflection pad)."""
        return max((self.patch_size - 1) * self.hop_length + 1, self.n_fft // 2 + 2)

    def validate(self) -> None:
        owner = "PaSSTConfig"
        check_positive(owner, self, ("sample_rate", "n_fft", "win_length", "hop_length", "mel_bins", "max_frames",
                                     "patch_size", "stride", "embed_dim", "depth", "num_heads", "fmin_aug_range",
                                     "fmax_aug_range"))
        if self.win_length > self.n_fft:
            raise InputError(f"invalid {owner}: win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise InputError(f"invalid {owner}: need 0 <= fmin < fmax <= sample_rate/2, got {self.fmin}, {self.fmax}")
        if self.mel_bins < self.patch_size or self.max_frames < self.patch_size:
            raise InputError(f"invalid {owner}: mel_bins and max_frames must hold one {self.patch_size}-patch")
        if self.embed_dim % self.num_heads:
            raise InputError(f"invalid {owner}: embed_dim {self.embed_dim} is not divisible by {self.num_heads} heads")
        self.levels = check_levels(owner, self.levels, self.depth)
        for name, most in (("s_patchout_t", self.time_patches), ("s_patchout_f", self.freq_patches)):
            if not 0 <= getattr(self, name) < most:
                raise InputError(f"invalid {owner}: {name} must be in [0, {most}), got {getattr(self, name)}")
        check_rates(owner, self, ("drop_rate", "attn_drop_rate", "drop_path_rate"))


# The presets are data (hade/models/preset_configs/*.json with "encoder": "passt").
PASST_PRESETS: Mapping[str, PaSSTConfig] = PresetMapping("passt", PaSSTConfig.from_dict)


class PaSSTMel(nn.Module):
    """hear21passt's ``AugmentMelSTFT``: waveform [B, T] -> normalised log-mel [B, 1, mel_bins, frames]."""

    def __init__(self, config: PaSSTConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.win_length, periodic=False), persistent=False)
        banks = mel_banks(config.mel_bins, config.n_fft, config.sample_rate, config.fmin, config.fmax)
        self.register_buffer("banks", banks, persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames of a clip: the pre-emphasis drops one sample, the centered STFT adds one frame."""
        return 1 + (num_samples - 1) // self.config.hop_length

    def _training_banks(self) -> torch.Tensor:
        c = self.config
        fmin = c.fmin + int(torch.randint(c.fmin_aug_range, (1,)))
        fmax = c.fmax + c.fmax_aug_range // 2 - int(torch.randint(c.fmax_aug_range, (1,)))
        return mel_banks(c.mel_bins, c.n_fft, c.sample_rate, fmin, min(fmax, c.sample_rate / 2)).to(self.banks)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        c = self.config
        x = waveform[:, 1:] - 0.97 * waveform[:, :-1]  # pre-emphasis
        spec = torch.stft(x, c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window=self.window,
                          center=True, return_complex=True)
        power = torch.view_as_real(spec).pow(2).sum(-1)  # [B, n_fft/2 + 1, frames]
        augment = self.training and (c.fmin_aug_range > 1 or c.fmax_aug_range > 1)
        banks = self._training_banks() if augment else self.banks
        with torch.autocast(device_type=power.device.type, enabled=False):
            mel = (banks.float() @ power.float() + 1e-5).log()  # [B, mel, frames]
        if self.training:
            mel = _drop_stripes(mel, 1, c.freqm, 1) if c.freqm else mel
            mel = _drop_stripes(mel, 2, c.timem, 1) if c.timem else mel
        return ((mel + 4.5) / 5.0).unsqueeze(1)


class PatchEmbed(nn.Module):
    """Overlapping patches: conv ``patch × patch`` at ``stride`` -> [B, C, F', T']."""

    def __init__(self, patch_size: int, stride: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class PaSSTEncoder(ViTLevels, nn.Module):
    """PaSST: waveform ``[B, T_samples]`` -> :class:`AudioFeatures` (patch tokens of the chosen blocks)."""

    family = "PaSST"

    def __init__(self, config: PaSSTConfig) -> None:
        super().__init__()
        config.validate()
        self.config = c = config
        self.mel = PaSSTMel(c)
        self.patch_embed = PatchEmbed(c.patch_size, c.stride, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.new_pos_embed = nn.Parameter(torch.zeros(1, 2, c.embed_dim))  # of the class and distillation tokens
        self.freq_new_pos_embed = nn.Parameter(torch.zeros(1, c.embed_dim, c.freq_patches, 1))
        self.time_new_pos_embed = nn.Parameter(torch.zeros(1, c.embed_dim, 1, c.time_patches))
        self.pos_drop = nn.Dropout(c.drop_rate)
        rates = torch.linspace(0, c.drop_path_rate, c.depth).tolist()
        self.blocks = nn.ModuleList(Block(c.embed_dim, c.num_heads, c.mlp_ratio, c.qkv_bias, c.drop_rate,
                                          c.attn_drop_rate, rates[i]) for i in range(c.depth))
        self.norm = nn.LayerNorm(c.embed_dim, eps=1e-6)
        for p in (self.cls_token, self.dist_token, self.new_pos_embed, self.freq_new_pos_embed,
                  self.time_new_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        self.apply(init_timm_weights)
        self.grad_checkpointing = False

    def _check_length(self, num_samples: int) -> None:
        c = self.config
        if num_samples > c.max_samples:
            raise InputError(f"audio clip too long for this PaSST config: {num_samples} samples "
                             f"({num_samples / c.sample_rate:.2f} s at {c.sample_rate} Hz), but one segment holds at "
                             f"most {c.max_samples} ({self.max_seconds:.2f} s); the caller must crop or window the audio")
        if num_samples < c.min_samples:
            raise InputError(f"audio clip too short: {num_samples} samples; PaSST needs at least {c.min_samples}")

    def token_seconds(self, num_samples: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """[len(rows) * len(cols), 2] (start, end) seconds of the patch tokens in row-major order: column t
        covers frames t*stride .. t*stride + patch - 1 (frame k is centred on sample k*hop)."""
        c = self.config
        step = c.hop_length / c.sample_rate
        start = cols.double() * c.stride * step
        end = torch.clamp((cols.double() * c.stride + c.patch_size) * step, max=num_samples / c.sample_rate)
        span = torch.stack([start, end], dim=-1).to(torch.float32)  # [T', 2]
        return span.repeat(len(rows), 1)

    def _tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patch grid [B, C, F', T'] with position embeddings -> tokens [B, M, C] and the kept rows/columns
        (structured patchout drops random whole columns/rows in training)."""
        c = self.config
        x = x + self.time_new_pos_embed[..., :x.shape[-1]] + self.freq_new_pos_embed
        rows, cols = torch.arange(x.shape[2]), torch.arange(x.shape[3])
        if self.training and c.s_patchout_t and x.shape[3] > c.s_patchout_t:
            cols = torch.randperm(x.shape[3])[:x.shape[3] - c.s_patchout_t].sort().values
            x = x[:, :, :, cols.to(x.device)]
        if self.training and c.s_patchout_f:
            rows = torch.randperm(x.shape[2])[:x.shape[2] - c.s_patchout_f].sort().values
            x = x[:, :, rows.to(x.device), :]
        return x.flatten(2).transpose(1, 2), rows, cols

    def forward(self, waveform: torch.Tensor) -> AudioFeatures:
        if waveform.dim() != 2:
            raise InputError(f"PaSSTEncoder expects a [batch, samples] waveform, got shape {tuple(waveform.shape)}")
        num_samples = waveform.shape[-1]
        self._check_length(num_samples)
        patches = self.patch_embed(self.mel(waveform))  # [B, C, F', T']
        tokens, rows, cols = self._tokens(patches)
        b = tokens.shape[0]
        special = torch.cat([self.cls_token, self.dist_token], dim=1) + self.new_pos_embed
        x = self.pos_drop(torch.cat([special.expand(b, -1, -1), tokens], dim=1))
        wanted, stages = set(self.config.levels), []
        for i, block in enumerate(self.blocks, start=1):
            x = checkpoint(block, x, use_reentrant=False) if self.grad_checkpointing and self.training else block(x)
            if i in wanted and i < self.config.depth:
                stages.append(x[:, 2:])
        x = self.norm(x)
        if self.config.depth in wanted:
            stages.append(x[:, 2:])
        seconds = self.token_seconds(num_samples, rows, cols).to(waveform.device)
        return AudioFeatures(stages=stages, grids=[(len(rows), len(cols))] * len(stages),
                             pooled=0.5 * (x[:, 0] + x[:, 1]), token_seconds=[seconds] * len(stages))


__all__ = ["PASST_PRESETS", "PaSSTConfig", "PaSSTEncoder", "PaSSTMel"]
