"""The two-stream retrieval model: HTSAT audio encoder + BERT text encoder + a retrieval head."""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from hade.config import ModelConfig, check_compute, seconds_to_samples
from hade.data.chunker import token_phrase_index
from hade.data.text import check_caption_normalize, normalize_captions
from hade.models.encoders.types import TextFeatures
from hade.models.embed import AUDIO_BATCH, TEXT_BATCH, AudioItem, WindowEmbeddings, embed_audio, embed_text
from hade.models.encoders.text_bert import TextEncoder
from hade.models.heads.base import RetrievalHead
from hade.models.heads.reprs import Reprs
from hade.models.segments import encode_audio


class RetrievalModel(nn.Module):
    """Encodes each side once into head representations and scores all pairs.

    `tokenizer` is the text encoder's tokenizer (a plain attribute, not a module). `set_compute` makes
    `encode_audio`/`encode_text` run under autocast in eval mode (training is not affected).
    """

    def __init__(self, config: ModelConfig, audio_encoder: nn.Module, text_encoder: TextEncoder,
                 head: RetrievalHead, tokenizer: Any) -> None:
        super().__init__()
        check_caption_normalize(config.caption_normalize)
        self.config = config
        self.audio_encoder = audio_encoder
        self.text_encoder = text_encoder
        self.head = head
        self.tokenizer = tokenizer
        self.inference_dtype: torch.dtype | None = None  # autocast dtype of encode_* in eval mode

    def set_compute(self, compute: str) -> "RetrievalModel":
        """The inference compute dtype (`hade.config.check_compute`): "fp32" (default), "bf16" (CPU with
        AVX512-BF16/AMX, or CUDA) or "fp16" (CUDA only), the autocast dtype of `encode_audio`/`encode_text`
        in eval mode. Their outputs are always float32, and `score` runs in float32, so rankings differ
        from fp32 only through the encoders' rounding. InputError for another value or fp16 off CUDA."""
        check_compute(compute, self.device.type)
        self.inference_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[compute]
        return self

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.inference_dtype is None or self.training:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.inference_dtype)

    def _float32(self, reprs: Reprs) -> Reprs:
        if self.inference_dtype is None or self.training:
            return reprs
        return {k: v.float() if torch.is_floating_point(v) else v for k, v in reprs.items()}

    @property
    def sample_rate(self) -> int:
        return self.audio_encoder.config.sample_rate

    @property
    def max_samples(self) -> int:
        """Longest waveform (samples) the audio encoder takes in one piece."""
        return self.audio_encoder.max_samples

    def samples_for(self, seconds: float) -> int:
        """Samples the audio encoder takes in one piece for a clip of `seconds`
        (`hade.config.seconds_to_samples`), at most `max_samples` (a window's length)."""
        return min(self.max_samples, seconds_to_samples(seconds, self.sample_rate))

    def clip_input_samples(self, seconds: float) -> int:
        """Samples of a clip of `seconds` as `encode_audio` takes it: not capped, since a clip longer than
        `max_samples` is encoded in segments (training and evaluation)."""
        return seconds_to_samples(seconds, self.sample_rate)

    @property
    def clip_seconds(self) -> float:
        """The clip length the model was trained on (`config.clip_seconds`, which may exceed one segment),
        else the encoder's longest input: what evaluation encodes of each clip by default."""
        return float(self.config.clip_seconds or self.max_samples / self.sample_rate)

    @property
    def clip_samples(self) -> int:
        """Samples of the clip length the model was trained on (`config.clip_seconds`), else `max_samples`;
        at most `max_samples` (the default window of the index, `hade classify` and `embed_audio`)."""
        if self.config.clip_seconds:
            return self.samples_for(self.config.clip_seconds)
        return self.max_samples

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def normalize(self, captions: list[str]) -> list[str]:
        """The captions as the text encoder sees them (`config.caption_normalize`, hade.data.text)."""
        return normalize_captions(captions, self.config.caption_normalize)

    def tokenize(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> input_ids [B, N], attention_mask [B, N] on the model's device (captions normalised first)."""
        batch = self.tokenizer(self.normalize(captions), padding=True, truncation=True,
                               max_length=self.config.max_text_tokens, return_tensors="pt")
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)

    @property
    def uses_aux_captions(self) -> bool:
        """True when the head (HCI+AC) takes auxiliary captions with the audio (`encode_audio(aux_captions=)`)."""
        return self.head.capabilities.uses_aux_captions

    def text_features(self, captions: list[str]) -> TextFeatures:
        """Text encoder features of `captions`; with a head that `needs_phrases` (HCI) and a fast tokenizer
        also `phrase_index` [B, N] from the rule-based chunker (hade.data.chunker) and the offset mapping."""
        captions = self.normalize(captions)
        if not (self.head.capabilities.needs_phrases and getattr(self.tokenizer, "is_fast", False)):
            return self.text_encoder(*self.tokenize(captions))
        batch = self.tokenizer(captions, padding=True, truncation=True, max_length=self.config.max_text_tokens,
                               return_tensors="pt", return_offsets_mapping=True)
        features = self.text_encoder(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
        features.phrase_index = token_phrase_index(captions, batch["offset_mapping"]).to(self.device)
        return features

    def encode_audio(self, waveform: torch.Tensor, aux_captions: list[str | None] | None = None,
                     lengths: torch.Tensor | None = None) -> Reprs:
        """waveform [B, T] at `sample_rate` -> head representations of the B clips.

        T longer than `max_samples`: the clips are encoded in segments of `max_samples`, their clip vectors
        averaged over the segments that hold audio and their tokens concatenated (hade.models.segments).
        lengths: [B] samples of audio in each row before zero padding, which decides the segments that
        hold audio (None: all of T); ignored when T fits the encoder.
        aux_captions: optionally one auxiliary (machine-generated) caption per clip, None or "" where a clip
        has none; encoded by the text encoder into `AudioFeatures.aux_text` when the head uses them
        (`uses_aux_captions`, HCI+AC) and ignored otherwise.
        """
        if aux_captions is not None and self.uses_aux_captions and len(aux_captions) != waveform.shape[0]:
            raise ValueError(f"encode_audio: {len(aux_captions)} auxiliary captions for {waveform.shape[0]} clips")
        with self._autocast():
            features = encode_audio(self.audio_encoder, waveform, lengths)
            if aux_captions is not None and self.uses_aux_captions:
                features.aux_text = self.text_features([c or "" for c in aux_captions])
            reprs = self.head.audio_repr(features)
        return self._float32(reprs)

    def encode_text(self, captions: list[str]) -> Reprs:
        with self._autocast():
            reprs = self.head.text_repr(self.text_features(captions))
        return self._float32(reprs)

    def score(self, text: Reprs, audio: Reprs) -> torch.Tensor:
        """[num_texts, num_audios] similarities."""
        return self.head.score(text, audio)

    # ---- embeddings in one call (hade.models.embed) ---------------------------------------------
    def embed_text(self, texts: str | Iterable[str], batch_size: int = TEXT_BATCH,
                   progress: bool | None = None) -> np.ndarray:
        """texts -> [N, D] float32 numpy, the head's pooled text vectors, L2-normalised (row i: text i).

        A single str is embedded as one text and gives [1, D]; a non-str element raises InputError. Runs
        in eval mode without autograd (the model's mode is restored), `batch_size` texts per encoder call,
        with a tqdm bar for long lists (progress=None: from 256 texts on, on a terminal; True/False force
        it). A head without pooled vectors (`tha`) raises InputError naming the heads that have them.
        """
        return embed_text(self, texts, batch_size=batch_size, progress=progress)

    def embed_audio(self, items: AudioItem | Sequence[AudioItem], sample_rate: int | None = None,
                    batch_size: int = AUDIO_BATCH, per_window: bool = False, window: float | None = None,
                    hop: float | None = None, progress: bool | None = None) -> np.ndarray | WindowEmbeddings:
        """Audio -> [N, D] float32 numpy, one L2-normalised vector per item; with `per_window` a
        `WindowEmbeddings` (vectors [W, D], item, start and end seconds of each window).

        items: file paths (str or Path, any format `hade index` reads), numpy arrays or torch tensors [T]
        (mono waveforms at `sample_rate` Hz, which is then required; resampled to the model's rate with
        soxr), or a 2-D array [N, T] of N waveforms; a single path or 1-D waveform is one item. Any length:
        each item is cut into the windows `hade index` uses (window: the model's clip length capped to
        10 s, hop: half the window; `window`/`hop` in seconds as `hade index --window/--hop`), an item
        shorter than a window is zero-padded to it, and the window vectors are the head's pooled audio
        vectors, equal to what `hade index` stores for the same windows (before float16 storage).
        Pooling (per_window=False): the mean of an item's L2-normalised window vectors, L2-normalised
        again (the vector `hade search --audio` searches with). HCI+AC heads embed without auxiliary
        captions, as an index built without --aux-captions.

        Eval mode without autograd, `batch_size` windows per encoder call (across items), a tqdm bar
        over items (progress=None: from 256 items on, on a terminal). An unreadable file raises
        AudioError naming it; a head without pooled vectors (`tha`) raises InputError naming the heads
        that have them.
        """
        return embed_audio(self, items, sample_rate=sample_rate, batch_size=batch_size, per_window=per_window,
                           window=window, hop=hop, progress=progress)
