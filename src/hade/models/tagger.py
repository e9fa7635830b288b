"""An audio tagger: the retrieval model's audio encoder with a multi-label classifier on its pooled vector.

Used only to pretrain the audio encoder (`hade pretrain`), as HTSAT's weights are pretrained on AudioSet
tagging before retrieval training; afterwards only the encoder's weights are kept (`--init-from`).
"""
from __future__ import annotations

import torch
from torch import nn


class AudioTagger(nn.Module):
    """waveform [B, T] -> label logits [B, L] (sigmoid per label: a clip may hold several)."""

    def __init__(self, audio_encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.audio_encoder = audio_encoder
        self.classifier = nn.Linear(audio_encoder.levels.dims[-1], num_labels)  # the pooled vector's width

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.audio_encoder(waveform).pooled)
