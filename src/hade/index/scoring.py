"""Scoring stored windows against an encoded query, block by block (`WindowScorer`).

A text query's score is the head's own: `model.score(text, windows)` over the windows' stored
representations (token features for THA, factors for DCR's CA, ...), the exact score the ANN's candidates
are re-ranked by and that pure THA heads (no pooled embedding, no ANN) compute for every window. An audio
or `Like` query's score is the cosine of its vector with the stored audio-audio vectors (the pooled
embedding, or `token_vector` of the stored tokens for pure THA).

Windows are scored in blocks of at most `EXHAUSTIVE_BLOCK`, fewer when their gathered arrays would exceed
`GATHER_BYTES`. Each block's arrays are gathered (and token codes decoded) outside the caller's `guard`,
and only the model's scoring runs inside it. Windows of a token codec set with a rotation (OPQ) are scored
in its rotated space: the query's words are rotated instead of every stored token. A score the head
cannot produce (NaN, inf, beyond its declared bound) is refused as a damaged chunk.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hade.index import integrity
from hade.index.integrity import Problem
from hade.index.meta import IndexMeta
from hade.index.query import Guard, token_vector
from hade.index.reprs import ReprTable, rows_within
from hade.index.store import chunk_name
from hade.utils.timing import Phases

EXHAUSTIVE_BLOCK = 4096  # windows scored at a time, at most; fewer when their arrays exceed GATHER_BYTES
GATHER_BYTES = 128 << 20  # float32 bytes of the windows gathered for one scoring block
SCORE_SLACK = 1e-2  # relative: float16 unit vectors and decoded tokens move a cosine by ~1e-3


def tensors(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Stored arrays -> float32 (bool/int kept) tensors on `device`."""
    out = {}
    for k, a in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(a))
        out[k] = (t.float() if t.is_floating_point() else t).to(device)
    return out


class WindowScorer:
    """Scores an encoded query against the stored windows of an open index.

    where: the index (for IndexDamaged); model: its model copy; reprs: its stored representations;
    table: its window table (`Store.window_table`)."""

    def __init__(self, where: Path, meta: IndexMeta, model, reprs: ReprTable, table: dict[str, np.ndarray]) -> None:
        self.where, self.meta, self.model, self.reprs, self.table = where, meta, model, reprs, table
        self.pooled_key = meta.pooled_key

    def stored_vectors(self, block: dict[str, torch.Tensor]) -> torch.Tensor:
        """Stored audio-audio vectors [B, D] of a block of windows."""
        return block[self.pooled_key] if self.pooled_key is not None else token_vector(block)

    def gather_vectors(self, positions: np.ndarray) -> torch.Tensor:
        """Stored audio-audio vectors [P, D] float32 of the windows at `positions`."""
        keys = [self.pooled_key] if self.pooled_key else None
        return self.stored_vectors(tensors(self.reprs.gather(positions, keys), self.model.device)).float()

    def score(self, text: dict[str, torch.Tensor] | None, qvec: torch.Tensor | None,
              positions: np.ndarray, guard: Guard, phases: Phases = Phases(None)) -> np.ndarray:
        """model.score(text, windows) — or the audio-audio cosine with qvec — for windows at positions [P];
        the arrays are gathered outside the guard, each block is scored inside it."""
        out = np.empty(len(positions), dtype=np.float32)
        keys = None if text is not None else [self.pooled_key] if self.pooled_key else None
        step = self._block_rows(keys)
        rotated_texts: dict[str | None, tuple[dict[str, torch.Tensor], set[str]]] = {}
        for a in range(0, len(positions), step):
            part = positions[a:a + step]
            if text is None:
                with phases("gather"):
                    block = tensors(self.reprs.gather(part, keys), self.model.device)
                with phases("score"), guard():
                    out[a:a + step] = (self.stored_vectors(block) @ qvec[0]).float().cpu().numpy()
                continue
            codec_ids = np.array(self.reprs.codec_of(part), dtype=object)
            for codec_id in dict.fromkeys(codec_ids.tolist()):  # each codec set scored in its own space
                sel = np.nonzero(codec_ids == codec_id)[0]
                if codec_id not in rotated_texts:
                    rotated_texts[codec_id] = self._text_in_space_of(text, codec_id)
                text_here, rotated = rotated_texts[codec_id]
                with phases("gather"):
                    block = tensors(self.reprs.gather(part[sel], keys, rotated), self.model.device)
                with phases("score"), guard():
                    out[a + sel] = self.model.score(text_here, block)[0].float().cpu().numpy()
        self._refuse_impossible(out, positions, 1.0 if text is None else self.model.head.capabilities.score_bound)
        return out

    def _refuse_impossible(self, scores: np.ndarray, positions: np.ndarray, bound: float | None) -> None:
        """IndexDamaged naming the chunk when a window scores what the head cannot produce: NaN or inf, or
        |score| beyond its declared bound (cosines: 1, with SCORE_SLACK for float16 storage) — the
        stored values were damaged after the checksums were taken, or in a way they could not see."""
        bad = ~np.isfinite(scores)
        if bound is not None:
            bad |= np.abs(scores) > bound * (1 + SCORE_SLACK)
        if not bad.any():
            return
        i = int(np.flatnonzero(bad)[0])
        rel = f"arrays/{chunk_name(int(self.table['chunk'][positions[i]]))}/"
        what = f"outside [-{bound:g}, {bound:g}]" if bound is not None and np.isfinite(scores[i]) else "not a number"
        raise integrity.damaged(self.where, Problem(rel, f"damaged (window {int(self.table['id'][positions[i]])} "
                                                         f"scores {float(scores[i]):.4g}, {what})", "chunk"), self.meta)

    def _text_in_space_of(self, text: dict[str, torch.Tensor], codec_id: str | None
                          ) -> tuple[dict[str, torch.Tensor], set[str]]:
        """(text reprs, audio keys to gather rotated) for windows of codec set `codec_id`: every audio key
        of the head's `rotation_pairs` that the set codes with a rotation R stays rotated (x Rᵀ, decoding
        skips R) and its text key is rotated the same way (t Rᵀ) instead, so `score` is unchanged and
        OPQ costs no per-token matrix product."""
        pairs = dict(self.model.head.capabilities.rotation_pairs)
        rotations = self.reprs.rotations(codec_id, pairs) if pairs else {}
        if not rotations:
            return text, set()
        out = dict(text)
        for key, matrix in rotations.items():
            words = text[pairs[key]]
            out[pairs[key]] = (words.float() @ torch.from_numpy(matrix).to(words.device).T).to(words.dtype)
        return out, set(rotations)

    def _block_rows(self, keys: list[str] | None) -> int:
        """Windows per scoring block: EXHAUSTIVE_BLOCK, fewer when the gathered arrays of `keys` (all: None)
        would exceed GATHER_BYTES as float32 (pure THA's exhaustive search: 1.4 GB for 4 096 windows of
        the CPU model's tokens)."""
        return rows_within(self.reprs.spec, GATHER_BYTES, EXHAUSTIVE_BLOCK, keys, itemsize=4)
