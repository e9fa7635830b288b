"""The two-stream retrieval model: HTSAT audio encoder + BERT text encoder + a retrieval head."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hade.config import ModelConfig
from hade.models.encoders.text_bert import TextEncoder
from hade.models.heads.base import RetrievalHead
from hade.models.heads.reprs import Reprs


class RetrievalModel(nn.Module):
    """Encodes each side once into head representations and scores all pairs.

    `tokenizer` is the text encoder's tokenizer (a plain attribute, not a module).
    """

    def __init__(self, config: ModelConfig, audio_encoder: nn.Module, text_encoder: TextEncoder,
                 head: RetrievalHead, tokenizer: Any) -> None:
        super().__init__()
        self.config = config
        self.audio_encoder = audio_encoder
        self.text_encoder = text_encoder
        self.head = head
        self.tokenizer = tokenizer

    @property
    def sample_rate(self) -> int:
        return self.audio_encoder.config.sample_rate

    @property
    def max_samples(self) -> int:
        """Longest waveform (samples) the audio encoder takes in one piece."""
        return self.audio_encoder.max_samples

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> input_ids [B, N], attention_mask [B, N] on the model's device."""
        batch = self.tokenizer(list(captions), padding=True, truncation=True,
                               max_length=self.config.max_text_tokens, return_tensors="pt")
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)

    def encode_audio(self, waveform: torch.Tensor) -> Reprs:
        """waveform [B, T] at `sample_rate` -> head representations of the B clips."""
        return self.head.audio_repr(self.audio_encoder(waveform))

    def encode_text_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Reprs:
        return self.head.text_repr(self.text_encoder(input_ids, attention_mask))

    def encode_text(self, captions: list[str]) -> Reprs:
        return self.encode_text_tokens(*self.tokenize(captions))

    def score(self, text: Reprs, audio: Reprs) -> torch.Tensor:
        """[num_texts, num_audios] similarities."""
        return self.head.score(text, audio)
