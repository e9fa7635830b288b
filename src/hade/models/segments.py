"""Clips longer than the audio encoder's longest input, encoded in segments.

A clip of T samples, T > `segment` (the encoder's `max_samples`), is cut from its start into
S = ceil(T / segment) segments of `segment` samples, the last one zero-padded; all segments of a batch
go through the encoder in one call. The clip's features are:

- `pooled`: the mean of the segments' clip vectors over the segments that hold audio, the first
  ceil(length / segment) of them (at least one); `length` is the clip's audio before zero padding.
  This is the DCASE 2025 baseline's rule (its 30 s input is three 10 s segments; a clip of at most 10 s
  uses the first segment's vector, one of at most 20 s the mean of the first two, a longer one all three),
  applied before the head's projection as there.
- every level's tokens: the S segments' tokens one after another ([B, S * M_l, C_l]), with the token times
  (`token_seconds`) of segment s moved by s * segment / sample_rate seconds, and the grid (S * H_l, W_l):
  the segments' grids stacked as rows. Token heads (THA, co-attention, HCI) thus see the whole clip;
  those that order tokens in time read `token_seconds`.

In training mode an encoder with BatchNorm (HTSAT's mel `bn0`) takes its batch statistics over all B * S
segments, padding-only ones included, so a batch of short clips in long-clip mode does not train exactly
as the same clips cut to one segment would.

Segments (the pieces of one clip, merged into one clip representation) are not the index's windows
(pieces of a long file, each searched and scored on its own).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from hade.models.encoders.types import AudioFeatures


def segment_count(num_samples: int, segment: int) -> int:
    """Segments of `segment` samples that cover `num_samples` (at least 1)."""
    return max(1, math.ceil(num_samples / segment))


def segments_with_audio(lengths: torch.Tensor | None, batch: int, segments: int, segment: int,
                        device: torch.device) -> torch.Tensor:
    """[B, S] float weights: 1 on the segments of each clip that hold audio (the first ceil(length / segment),
    at least one, at most S), 0 on those that are only padding; all ones without `lengths`."""
    if lengths is None:
        return torch.ones(batch, segments, device=device)
    lengths = torch.as_tensor(lengths, device=device).long().reshape(-1)
    if lengths.shape[0] != batch:
        raise ValueError(f"encode_segments: {lengths.shape[0]} lengths for {batch} clips")
    used = ((lengths + segment - 1) // segment).clamp(1, segments)
    return (torch.arange(segments, device=device)[None, :] < used[:, None]).float()


def encode_segments(encoder: nn.Module, waveform: torch.Tensor, segment: int,
                    lengths: torch.Tensor | None = None) -> AudioFeatures:
    """waveform [B, T] (T may exceed `segment`) -> the clips' AudioFeatures as the module docstring states.

    segment: samples of one segment (the encoder's `max_samples`); lengths: [B] samples of audio in each
    row before zero padding (None: all of T is audio)."""
    batch, total = waveform.shape
    s = segment_count(total, segment)
    if s * segment != total:
        waveform = torch.nn.functional.pad(waveform, (0, s * segment - total))
    features = encoder(waveform.reshape(batch * s, segment))
    weights = segments_with_audio(lengths, batch, s, segment, waveform.device)
    pooled = features.pooled.reshape(batch, s, -1)
    weights = weights.to(pooled.dtype)
    pooled = (pooled * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
    seconds = segment / encoder.config.sample_rate
    stages = [x.reshape(batch, s * x.shape[1], x.shape[2]) for x in features.stages]
    grids = [(s * h, w) for h, w in features.grids]
    token_seconds = [torch.cat([t + k * seconds for k in range(s)]) for t in features.token_seconds]
    return AudioFeatures(stages=stages, grids=grids, pooled=pooled, token_seconds=token_seconds)


def encode_audio(encoder: nn.Module, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> AudioFeatures:
    """waveform [B, T] -> AudioFeatures: one encoder call when T fits the encoder (`max_samples`), else in
    segments of `max_samples` (`encode_segments`; `lengths` read only then)."""
    if waveform.shape[-1] > encoder.max_samples:
        return encode_segments(encoder, waveform, encoder.max_samples, lengths)
    return encoder(waveform)
