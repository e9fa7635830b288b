"""Turning a query into what the stored windows are scored against (`QueryEncoder`).

Text query: the caption is encoded once, inside the caller's `guard`, into the head's text representations.

Audio query (query by example): the query is cut into windows like indexed files, encoded in batches of
`AUDIO_QUERY_BATCH` windows (only a running sum of their vectors is kept, so memory does not grow with
the query's length beyond the waveform), and its pooled embeddings averaged and L2-normalised; windows
are ranked by cosine to the stored pooled embeddings (ANN recall, then the exact cosine). This is the
score for every head: the non-factorised heads define no audio-audio score. Pure THA heads use, instead,
the cosine of the concatenated per-level means of the projected audio tokens (exhaustive).

Query by indexed windows (`Like`, "more like this"): the normalised mean of the windows' stored audio-audio
vectors, ranked like an audio query; nothing is decoded or encoded, so it costs an ANN probe and dot
products. Its hits leave out the query's own files (or, with `same_file`, only its own windows).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hade.data.audio import load_audio
from hade.errors import InputError
from hade.index.meta import IndexMeta
from hade.index.query import Guard, Like, Query, QueryVector, token_vector, window_position
from hade.index.scoring import WindowScorer
from hade.index.windows import window_batches, window_bounds

AUDIO_QUERY_BATCH = 4  # windows of an audio query per model call (one `guard` each); 4, not 8: a text query
# served between batches waits for at most one, and 8 raised text p95 under uploads from 2.2x to 2.9x
# (benchmarks/load.py --mixed --model demo, docs/security.md)


class QueryEncoder:
    """Encodes text, audio and `Like` queries with an open index's model copy; a `Like` query's vector comes
    from the stored windows (`scorer`), looked up in the window table `table` of the index `where`."""

    def __init__(self, where: Path, meta: IndexMeta, model, scorer: WindowScorer, table: dict[str, np.ndarray]) -> None:
        self.where, self.meta, self.model, self.scorer, self.table = where, meta, model, scorer, table
        self.pooled_key = meta.pooled_key

    def encode(self, query: Query, guard: Guard, audio_batch: int = AUDIO_QUERY_BATCH
               ) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
        """(text reprs, None) for a caption; (None, query vector [1, D]) for audio."""
        if isinstance(query, str):
            if not query.strip():
                raise InputError("empty text query")
            with guard():
                return self.model.encode_text([query]), None
        if isinstance(query, (Path, np.ndarray, torch.Tensor)):
            return None, self.audio_vector(query, guard, audio_batch)
        if isinstance(query, Like):
            return None, self.like_vector(query)
        if isinstance(query, QueryVector):
            vec = torch.as_tensor(np.asarray(query.vector, dtype=np.float32).reshape(1, -1), device=self.model.device)
            return None, vec
        raise InputError("a query is text (str), audio (pathlib.Path or 1-D waveform) or Like(window ids), got "
                         f"{type(query).__name__}")

    def _audio_wave(self, query: Path | np.ndarray | torch.Tensor) -> np.ndarray:
        sr = self.meta.sample_rate
        if isinstance(query, Path):
            return load_audio(query, sr)
        wave = np.asarray(query.detach().cpu() if isinstance(query, torch.Tensor) else query, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise InputError(f"an audio query is a 1-D waveform at {sr} Hz, got shape {wave.shape}")
        return wave

    def window_vectors(self, reprs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Audio-audio vectors [B, D] of freshly encoded windows (model use: call inside the guard)."""
        if self.meta.storage_dtype == "float16":  # as if stored, so a query equals its own indexed windows
            reprs = {k: v.half().float() if v.is_floating_point() else v for k, v in reprs.items()}
        if self.pooled_key is None:
            return token_vector(reprs)
        if self.pooled_key in reprs:
            return reprs[self.pooled_key].float()
        return self.model.head.pooled_audio(reprs).float()

    @torch.inference_mode()
    def audio_vector(self, query: Path | np.ndarray | torch.Tensor, guard: Guard,
                     batch: int = AUDIO_QUERY_BATCH) -> torch.Tensor:
        """The query vector [1, D]: the normalised mean of its windows' vectors, encoded `batch` windows at
        a time (one guard each); only the running sum is kept between batches."""
        wave = self._audio_wave(query)
        win = self.meta.window_samples
        bounds = window_bounds(len(wave), win, self.meta.hop_samples)
        total: torch.Tensor | None = None
        for windows in window_batches(wave, bounds, win, batch):
            with guard():
                vecs = self.window_vectors(self.model.encode_audio(torch.from_numpy(windows).to(self.model.device)))
            part_sum = vecs.sum(0, keepdim=True)
            total = part_sum if total is None else total + part_sum
        return F.normalize(total / len(bounds), dim=-1)

    def like_vector(self, query: Like) -> torch.Tensor:
        """[1, D]: the normalised mean of the stored audio-audio vectors of `query`'s windows (KeyError for
        an unknown id)."""
        positions = np.array([window_position(self.table["id"], i, self.where) for i in query.window_ids],
                             dtype=np.int64)
        return F.normalize(self.scorer.gather_vectors(positions).mean(0, keepdim=True), dim=-1)
