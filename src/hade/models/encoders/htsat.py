"""HTSAT-compatible Swin Transformer audio encoder (re-implementation of HTS-AT's backbone).

Pipeline (as in RetroCirce/HTS-Audio-Transformer): waveform -> :class:`LogMel` -> ``bn0`` over the mel
axis -> (SpecAugment-style masking in training) -> bicubic stretch along time to
``target_frames = spec_size * freq_ratio`` -> ``reshape_wav2img`` (the time axis is cut into
``freq_ratio`` consecutive chunks stacked along frequency: image row = chunk * mel_bins + mel, column =
frame inside the chunk) -> patch embedding -> Swin stages with PatchMerging in between -> LayerNorm.

Module and parameter names equal the reference's, so HTSAT / CLAP / WavCaps checkpoints load after a
prefix map; the torchlibrosa STFT/mel weights of those checkpoints are not parameters here (the front
end is recomputed), and the TSCAM head (``tscam_conv``, ``head``) is not part of this encoder.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hade.errors import InputError
from hade.models.encoders.mel import LogMel
from hade.models.encoders.swin import BasicLayer, init_timm_weights
from hade.models.encoders.types import AudioFeatures, AudioLevels
from hade.models.presets import PresetMapping


# HTSATConfig fields that only shape training (regularisation), not what the weights mean
HTSAT_TRAINING_ONLY = frozenset({"drop_rate", "attn_drop_rate", "drop_path_rate", "spec_augment", "time_drop_width",
                                 "freq_drop_width", "drop_stripes"})


@dataclass
class HTSATConfig:
    """Hyper-parameters of :class:`HTSATEncoder`; the defaults are HTS-AT "tiny" (AudioSet, 32 kHz).

    The image is ``spec_size × spec_size``: ``freq_ratio = spec_size // mel_bins`` time chunks of
    ``spec_size`` frames, each ``mel_bins`` rows high, so ``spec_size`` must be a multiple of
    ``mel_bins``. The STFT window length equals ``n_fft``. ``time_drop_width``/``freq_drop_width``/
    ``drop_stripes`` parameterise the SpecAugment masking used in training when ``spec_augment``.
    """

    sample_rate: int = 32000
    n_fft: int = 1024
    hop_length: int = 320
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    spec_size: int = 256
    patch_size: int = 4
    in_chans: int = 1
    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    window_size: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    spec_augment: bool = False
    time_drop_width: int = 64
    freq_drop_width: int = 8
    drop_stripes: int = 2

    def __post_init__(self) -> None:
        self.depths = [int(d) for d in self.depths]
        self.num_heads = [int(h) for h in self.num_heads]
        self.validate()

    # ---- derived geometry -------------------------------------------------------------------
    @property
    def freq_ratio(self) -> int:
        return self.spec_size // self.mel_bins

    @property
    def target_frames(self) -> int:
        """Frames after the time stretch (``spec_size * freq_ratio``)."""
        return self.spec_size * self.freq_ratio

    @property
    def max_samples(self) -> int:
        """Longest waveform whose centered STFT has at most ``target_frames`` frames."""
        return self.target_frames * self.hop_length - 1

    @property
    def min_samples(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def stage_dims(self) -> list[int]:
        return [self.embed_dim * 2**s for s in range(self.num_stages)]

    @property
    def grids(self) -> list[tuple[int, int]]:
        side = self.spec_size // self.patch_size
        return [(side >> s, side >> s) for s in range(self.num_stages)]

    def validate(self) -> None:
        def bad(msg: str) -> InputError:
            return InputError(f"invalid HTSATConfig: {msg}")

        for name in ("sample_rate", "n_fft", "hop_length", "mel_bins", "spec_size", "patch_size", "in_chans",
                     "embed_dim", "window_size"):
            if int(getattr(self, name)) <= 0:
                raise bad(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise bad(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={self.fmax}, "
                      f"sample_rate={self.sample_rate}")
        if self.in_chans != 1:
            raise bad(f"in_chans must be 1 (one log-mel channel; the LAION fusion front end is not implemented), "
                      f"got {self.in_chans}")
        if self.spec_size % self.mel_bins:
            raise bad(f"spec_size ({self.spec_size}) must be a multiple of mel_bins ({self.mel_bins})")
        if self.spec_size % self.patch_size:
            raise bad(f"spec_size ({self.spec_size}) must be a multiple of patch_size ({self.patch_size})")
        if not self.depths or len(self.depths) != len(self.num_heads):
            raise bad(f"depths {self.depths} and num_heads {self.num_heads} must be non-empty and equally long")
        side = self.spec_size // self.patch_size
        if side % 2 ** (self.num_stages - 1):
            raise bad(f"token grid {side} cannot be halved {self.num_stages - 1} times")
        for s, (dim, heads) in enumerate(zip(self.stage_dims, self.num_heads)):
            if heads <= 0 or dim % heads:
                raise bad(f"stage {s}: dim {dim} is not divisible by {heads} heads")
            res = side >> s
            ws = min(res, self.window_size)
            if res % ws:
                raise bad(f"stage {s}: window {self.window_size} does not divide the {res}x{res} token grid")
        for name in ("drop_rate", "attn_drop_rate", "drop_path_rate"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise bad(f"{name} must be in [0, 1), got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def geometry(self) -> dict:
        """The fields that decide what the weights mean (all but the regularisation ones)."""
        return {k: v for k, v in self.to_dict().items() if k not in HTSAT_TRAINING_ONLY}

    @classmethod
    def from_dict(cls, data: dict) -> "HTSATConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown HTSATConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


# The presets are data (hade/models/preset_configs/*.json, plus a user's HADE_PRESET_PATH): see
# hade.models.presets. This view builds a fresh HTSATConfig on each lookup.
HTSAT_PRESETS: Mapping[str, HTSATConfig] = PresetMapping("htsat", HTSATConfig.from_dict)


def htsat_config(name: str, **overrides) -> HTSATConfig:
    """A fresh copy of preset ``name`` with ``overrides`` applied."""
    if name not in HTSAT_PRESETS:
        raise InputError(f"unknown HTSAT preset {name!r}; available: {sorted(HTSAT_PRESETS)}")
    return HTSATConfig.from_dict({**HTSAT_PRESETS[name].to_dict(), **overrides})


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch × patch`` conv patches -> tokens ``[B, H*W, C]`` -> LayerNorm."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


def _drop_stripes(x: torch.Tensor, dim: int, max_width: int, stripes: int) -> torch.Tensor:
    """Zero ``stripes`` random stripes of width in ``[0, max_width)`` along ``dim`` of each example."""
    total = x.shape[dim]
    max_width = min(max_width, total)
    if max_width <= 1 or stripes <= 0:
        return x
    b = x.shape[0]
    widths = torch.randint(0, max_width, (b, stripes), device=x.device)
    starts = (torch.rand(b, stripes, device=x.device) * (total - widths + 1)).long()
    idx = torch.arange(total, device=x.device)
    hit = ((idx >= starts[..., None]) & (idx < (starts + widths)[..., None])).any(1)  # [B, total]
    shape = [b] + [1] * (x.dim() - 1)
    shape[dim] = total
    return x.masked_fill(hit.view(shape), 0.0)


class HTSATEncoder(nn.Module):
    """HTS-AT Swin backbone: waveform ``[B, T_samples]`` -> :class:`AudioFeatures`."""

    def __init__(self, config: HTSATConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        c = config
        self.logmel = LogMel(c.sample_rate, c.n_fft, c.n_fft, c.hop_length, c.mel_bins, c.fmin, c.fmax)
        self.bn0 = nn.BatchNorm2d(c.mel_bins)
        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, c.embed_dim)
        self.pos_drop = nn.Dropout(c.drop_rate)
        rates = torch.linspace(0, c.drop_path_rate, sum(c.depths)).tolist()
        self.layers = nn.ModuleList()
        for s, (depth, heads, dim, grid) in enumerate(zip(c.depths, c.num_heads, c.stage_dims, c.grids)):
            first = sum(c.depths[:s])
            self.layers.append(
                BasicLayer(
                    dim, grid, depth, heads, c.window_size, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias,
                    drop=c.drop_rate, attn_drop=c.attn_drop_rate, drop_path=rates[first:first + depth],
                    downsample=s < c.num_stages - 1,
                )
            )
        self.norm = nn.LayerNorm(c.stage_dims[-1])
        self.apply(init_timm_weights)
        self._seconds_cache: dict[tuple[int, str], list[torch.Tensor]] = {}

    # ---- public geometry ----------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return self.config.num_stages

    @property
    def stage_dims(self) -> list[int]:
        return self.config.stage_dims

    @staticmethod
    def levels_for(config: HTSATConfig) -> AudioLevels:
        """The token levels heads may use: every Swin stage (THA aligns stages 2/3/4)."""
        return AudioLevels.swin_stages(config.stage_dims)

    @property
    def levels(self) -> AudioLevels:
        return self.levels_for(self.config)

    @property
    def max_samples(self) -> int:
        """Longest input (samples) that fits without cropping; longer clips must be cropped/chunked."""
        return self.config.max_samples

    @property
    def max_seconds(self) -> float:
        return self.config.max_samples / self.config.sample_rate

    def level_name(self, level: int) -> str:
        """Label of stage `level` (1-based) for explanations, "HTSAT stage 3" (the encoder contract that
        `hade.explain` reads; the text encoder has the same method)."""
        return f"HTSAT stage {int(level)}"

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute block activations in backward (saves memory during training)."""
        for layer in self.layers:
            layer.use_checkpoint = enabled

    # ---- front end ----------------------------------------------------------------------------
    def _check_length(self, num_samples: int) -> None:
        c = self.config
        if num_samples > c.max_samples:
            raise InputError(
                f"audio clip too long for this HTSAT config: {num_samples} samples "
                f"({num_samples / c.sample_rate:.2f} s at {c.sample_rate} Hz), but at most {c.max_samples} samples "
                f"({self.max_seconds:.2f} s) fit ({c.target_frames} frames at hop {c.hop_length}); "
                f"the caller must crop or chunk the audio"
            )
        if num_samples < c.min_samples:
            raise InputError(
                f"audio clip too short: {num_samples} samples; at least {c.min_samples} are needed "
                f"(n_fft={c.n_fft})"
            )

    def spectrogram_image(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, T]`` -> normalised (and in training, augmented) image ``[B, 1, S, S]``."""
        return self.logmel_image(self.logmel(waveform))

    def logmel_image(self, logmel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, 1, T_frames, mel]`` -> normalised (and in training, augmented) image ``[B, 1, S, S]``."""
        c = self.config
        x = self.bn0(logmel.transpose(1, 3)).transpose(1, 3)
        if self.training and c.spec_augment:
            x = _drop_stripes(x, 2, c.time_drop_width, c.drop_stripes)
            x = _drop_stripes(x, 3, c.freq_drop_width, c.drop_stripes)
        return self.reshape_wav2img(x)

    def reshape_wav2img(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, mel]`` -> ``[B, C, spec_size, spec_size]``: bicubic time stretch + chunk folding."""
        c = self.config
        b, ch, t, f = x.shape
        target = c.target_frames
        if t > target:
            raise InputError(f"{t} frames exceed the {target} frames this HTSAT config holds; crop or chunk")
        if t < target:
            x = F.interpolate(x, size=(target, f), mode="bicubic", align_corners=True)
        r = c.freq_ratio
        x = x.permute(0, 1, 3, 2).reshape(b, ch, f, r, target // r)  # [B, C, mel, chunk, frame]
        return x.permute(0, 1, 3, 2, 4).reshape(b, ch, r * f, target // r)

    # ---- token times --------------------------------------------------------------------------
    def frame_edges(self, num_samples: int) -> torch.Tensor:
        """``[target_frames + 1]`` float64 boundaries (s) of the stretched frames of a clip.

        Stretched frame j sits at source frame ``j*(T-1)/(target-1)`` (bicubic, align_corners=True),
        i.e. at ``j*(T-1)/(target-1)*hop/sr`` seconds; boundaries are midpoints between neighbours,
        the first is 0 and the last is the clip duration.
        """
        c = self.config
        frames = self.logmel.num_frames(num_samples)
        target = c.target_frames
        step = (frames - 1) / (target - 1) if target > 1 else 0.0
        centers = torch.arange(target, dtype=torch.float64) * step * c.hop_length / c.sample_rate
        edges = torch.empty(target + 1, dtype=torch.float64)
        edges[0] = 0.0
        edges[1:-1] = 0.5 * (centers[:-1] + centers[1:])
        edges[-1] = num_samples / c.sample_rate
        return edges

    def token_seconds(self, num_samples: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Per stage ``[M_s, 2]`` (start, end) seconds covered by each token for a clip of ``num_samples``.

        A stage-s token covers ``patch_size * 2**s`` image rows and columns; its rows give the time
        chunk(s) (row // mel_bins), its columns the stretched frames inside the chunk, mapped back to the
        original clip through :meth:`frame_edges`. Tokens of one grid row tile their chunk contiguously;
        all tokens together cover ``[0, num_samples / sample_rate]``. Cached per length (do not modify).
        """
        key = (int(num_samples), str(device))
        if key not in self._seconds_cache:
            c = self.config
            edges = self.frame_edges(num_samples)
            chunk_len = c.target_frames // c.freq_ratio  # columns per chunk (= spec_size)
            out = []
            for s, (gh, gw) in enumerate(c.grids):
                p = c.patch_size * 2**s  # image pixels per token side at stage s
                rows = torch.arange(gh)
                cols = torch.arange(gw)
                first_chunk = (rows * p) // c.mel_bins  # a token may span chunks if p > mel_bins
                last_chunk = ((rows + 1) * p - 1) // c.mel_bins
                start = edges[first_chunk[:, None] * chunk_len + cols[None, :] * p]
                end = edges[last_chunk[:, None] * chunk_len + (cols[None, :] + 1) * p]
                out.append(torch.stack([start, end], dim=-1).reshape(gh * gw, 2).to(torch.float32).to(device))
            self._seconds_cache[key] = out
        return self._seconds_cache[key]

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, waveform: torch.Tensor) -> AudioFeatures:
        if waveform.dim() != 2:
            raise InputError(f"HTSATEncoder expects a [batch, samples] waveform, got shape {tuple(waveform.shape)}")
        num_samples = waveform.shape[-1]
        self._check_length(num_samples)
        return self.forward_logmel(self.logmel(waveform), num_samples)

    def forward_logmel(self, logmel: torch.Tensor, num_samples: int | None = None) -> AudioFeatures:
        """The encoder after its front end: log-mel features ``[B, 1, T_frames, mel_bins]`` (what :class:`LogMel`
        returns; transformers' ``ClapFeatureExtractor`` ``input_features`` have this layout) -> AudioFeatures.
        ``num_samples`` (the clip's length, for ``token_seconds``) defaults to ``(T_frames - 1) * hop_length``."""
        c = self.config
        if logmel.dim() != 4 or logmel.shape[1] != 1 or logmel.shape[-1] != c.mel_bins:
            raise InputError(f"HTSATEncoder expects log-mel features [batch, 1, frames, {c.mel_bins}], "
                             f"got shape {tuple(logmel.shape)}")
        if num_samples is None:
            num_samples = (logmel.shape[2] - 1) * c.hop_length
        x = self.pos_drop(self.patch_embed(self.logmel_image(logmel)))
        stages = []
        for layer in self.layers:
            out, x = layer(x)
            stages.append(out)
        stages[-1] = self.norm(stages[-1])
        pooled = stages[-1].mean(dim=1)
        return AudioFeatures(
            stages=stages,
            grids=list(self.config.grids),
            pooled=pooled,
            token_seconds=list(self.token_seconds(num_samples, logmel.device)),
        )


def build_htsat(name_or_config: str | HTSATConfig, **overrides) -> HTSATEncoder:
    """Encoder from a preset name (with optional field overrides) or a config."""
    if isinstance(name_or_config, str):
        return HTSATEncoder(htsat_config(name_or_config, **overrides))
    cfg = HTSATConfig.from_dict({**name_or_config.to_dict(), **overrides}) if overrides else name_or_config
    return HTSATEncoder(cfg)


__all__ = ["HTSATConfig", "HTSAT_PRESETS", "HTSATEncoder", "build_htsat", "htsat_config"]
