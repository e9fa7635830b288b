"""An audio tagger: the retrieval model's audio encoder with a multi-label classifier on its pooled vector.

Used only to pretrain the audio encoder (`hade pretrain`), as HTSAT's weights are pretrained on AudioSet
tagging before retrieval training; afterwards only the encoder's weights are kept (`--init-from`).
"""
from __future__ import annotations

import torch
from torch import nn

from hade.models.segments import encode_audio


class AudioTagger(nn.Module):
    """waveform [B, T] -> label logits [B, L] (sigmoid per label: a clip may hold several).

    T longer than the encoder's `max_samples` is encoded in segments (hade.models.segments), as the
    retrieval model does: the logits come from the mean of the clip vectors of the segments holding audio."""

    def __init__(self, audio_encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.audio_encoder = audio_encoder
        self.classifier = nn.Linear(audio_encoder.levels.dims[-1], num_labels)  # the pooled vector's width

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """lengths: [B] samples of audio in each row before zero padding (None: all of T); only read when
        T needs segments."""
        return self.classifier(encode_audio(self.audio_encoder, waveform, lengths).pooled)
