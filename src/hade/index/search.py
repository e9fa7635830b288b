"""Searching an index: ANN recall on the pooled embedding, then exact re-ranking with the index's head.

Text query: the caption is encoded once; the ANN returns `candidates` windows by pooled cosine; their
stored representations (token features for THA, factors for DCR's CA, ...) are scored with
`model.score(text, windows)` and the best `k` returned. Heads without a pooled embedding (pure THA)
have no ANN: every window is scored with `model.score`, block by block (exhaustive).

Audio query (query by example): the query is cut into windows like indexed files, encoded, and its
pooled embeddings averaged and L2-normalised; windows are ranked by cosine to the stored pooled
embeddings (ANN recall, then the exact cosine). This is the score for every head: the non-factorised
heads define no audio-audio score. Pure THA heads use, instead, the cosine of the concatenated
per-level means of the projected audio tokens (exhaustive).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F

from hade.data.audio import load_audio
from hade.errors import InputError
from hade.index.ann import ann_search, load_ann, read_ann_params
from hade.index.finalize import ann_is_current
from hade.index.store import ReprTable, Store, model_fingerprint
from hade.index.windows import window_bounds

Query = Union[str, Path, np.ndarray, torch.Tensor]
EXHAUSTIVE_BLOCK = 4096


@dataclass(frozen=True)
class Window:
    """An indexed window: id, file path relative to the indexed folder, start/end seconds in the file."""

    id: int
    path: str
    start: float
    end: float


@dataclass(frozen=True)
class Hit:
    """A search result: a window and its score (higher = better)."""

    id: int
    path: str
    start: float
    end: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "start": self.start, "end": self.end, "score": self.score}


def _tensors(arrays: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Stored arrays -> float32 (bool/int kept) tensors on `device`."""
    out = {}
    for k, a in arrays.items():
        t = torch.from_numpy(np.ascontiguousarray(a))
        out[k] = (t.float() if t.is_floating_point() else t).to(device)
    return out


def token_vector(reprs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Audio-audio vector of heads without a pooled embedding: per level (keys of rank 3, [A, M, d]) the
    mean token, L2-normalised, concatenated and normalised again -> [A, levels·d]."""
    parts = [F.normalize(v.float().mean(1), dim=-1) for k, v in sorted(reprs.items())
             if v.dim() == 3 and v.is_floating_point()]
    if not parts:
        raise InputError("this head stores no pooled embedding nor token features; audio queries are not supported")
    return F.normalize(torch.cat(parts, -1), dim=-1)


def rank(ids: np.ndarray, scores: np.ndarray, k: int, file_of: np.ndarray | None = None) -> list[tuple[int, float]]:
    """Best `k` (id, score) by score descending, ties by id ascending; with `file_of` ([len(ids)] file
    keys) only the best window of each file."""
    order = np.lexsort((ids, -scores.astype(np.float64)))
    out, seen = [], set()
    for i in order:
        if file_of is not None:
            if file_of[i] in seen:
                continue
            seen.add(file_of[i])
        out.append((int(ids[i]), float(scores[i])))
        if len(out) == k:
            break
    return out


class Index:
    """A built index opened for searching (read-only). Use `Index.open(path)`."""

    def __init__(self, path: Path, store: Store, model, meta: dict[str, Any], root: Path) -> None:
        self.path, self.store, self.model, self.meta, self.root = path, store, model, meta, root
        self.table = store.window_table()
        self.paths = dict(store.conn.execute("SELECT id, path FROM files WHERE status='ok'"))
        self.unreadable = store.conn.execute("SELECT COUNT(*) FROM files WHERE status='error'").fetchone()[0]
        self.reprs = ReprTable(store, self.table["chunk"], self.table["row"], meta.get("repr_spec") or {})
        self.ann_params = read_ann_params(path)
        self.ann = None
        if self.ann_params is not None and self.ann_params.kind in ("flat", "ivf"):
            self.ann = load_ann(path, self.ann_params)
        self.pooled_key = meta.get("pooled_key")

    @classmethod
    def open(cls, path: str | Path, device: str | torch.device = "cpu", root: str | Path | None = None,
             verify: bool = True, precision: str = "fp32") -> "Index":
        """Open INDEX for searching with its own model copy. root: where the indexed files are now (default:
        the folder they were indexed from). verify: check the model copy against the stored fingerprint.
        precision: "fp32", "bf16" or "fp16" (CUDA) autocast for encoding queries (`hade.load`)."""
        from hade.checkpoint import load

        path = Path(path)
        store = Store(path)
        try:  # close the SQLite connection when the index cannot be opened
            meta = store.meta()
            if "fingerprint" not in meta:
                raise InputError(f"{path}: empty index (interrupted before anything was stored); run `hade index`")
            if not ann_is_current(store):
                raise InputError(f"{path}: the index changed after its ANN was built (interrupted or running "
                                 "`hade index`?); run `hade index` again to finish it")
            if verify and model_fingerprint(store.model_dir) != meta["fingerprint"]:
                raise InputError(f"{path}: model/ does not match the fingerprint the index was built with")
            model = load(store.model_dir, device=device, precision=precision)
            return cls(path, store, model, meta, Path(root) if root is not None else Path(meta["root"]))
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self.table["id"].shape[0])

    # ---- records ------------------------------------------------------------------------------
    def _pos(self, window_id: int) -> int:
        p = int(np.searchsorted(self.table["id"], window_id))
        if p >= len(self) or self.table["id"][p] != window_id:
            raise KeyError(f"no window with id {window_id} in {self.path}")
        return p

    def get(self, window_id: int) -> Window:
        p = self._pos(window_id)
        return Window(int(window_id), self.paths[int(self.table["file_id"][p])], float(self.table["start"][p]),
                      float(self.table["end"][p]))

    def audio_path(self, window_id: int) -> Path:
        """Absolute path of the (indexed) file holding window `window_id`."""
        rel = self.get(window_id).path
        if rel.startswith("/") or ".." in rel.split("/"):
            raise InputError(f"{self.path}: refusing file path {rel!r} outside the indexed folder")
        return self.root / rel

    def window_audio(self, window_id: int) -> np.ndarray:
        """The window's samples [end_sample - start_sample] float32 at the model's rate (not padded)."""
        p = self._pos(window_id)
        wave = load_audio(self.audio_path(window_id), self.meta["sample_rate"])
        return wave[int(self.table["start_sample"][p]):int(self.table["end_sample"][p])]

    def info(self) -> dict[str, Any]:
        sr = self.meta["sample_rate"]
        return {"path": str(self.path), "root": str(self.root), "files": len(self.paths),
                "unreadable_files": self.unreadable, "windows": len(self), "fingerprint": self.meta["fingerprint"],
                "head": self.meta["head"], "factorised": bool(self.model.head.factorised),
                "sample_rate": sr, "window": self.meta["window_samples"] / sr, "hop": self.meta["hop_samples"] / sr,
                "precision": self.meta["precision"], "pooled_key": self.pooled_key,
                "repr_keys": sorted(self.meta.get("repr_spec") or {}), "shard": self.meta.get("shard"),
                "ann": vars(self.ann_params) if self.ann_params else None}

    # ---- queries ------------------------------------------------------------------------------
    @torch.inference_mode()
    def _audio_query_reprs(self, query: Path | np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        sr = self.meta["sample_rate"]
        if isinstance(query, Path):
            wave = load_audio(query, sr)
        else:
            wave = np.asarray(query.detach().cpu() if isinstance(query, torch.Tensor) else query, dtype=np.float32)
            if wave.ndim != 1 or wave.size == 0:
                raise InputError(f"an audio query is a 1-D waveform at {sr} Hz, got shape {wave.shape}")
        win = self.meta["window_samples"]
        bounds = window_bounds(len(wave), win, self.meta["hop_samples"])
        batch = np.zeros((len(bounds), win), dtype=np.float32)
        for i, (s, e) in enumerate(bounds):
            batch[i, :e - s] = wave[s:e]
        reprs = self.model.encode_audio(torch.from_numpy(batch).to(self.model.device))
        return {k: v.half().float() if v.is_floating_point() and self.meta["precision"] == "float16" else v
                for k, v in reprs.items()}

    def _query_vector(self, audio_reprs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.pooled_key is not None:
            if self.pooled_key in audio_reprs:
                vec = audio_reprs[self.pooled_key].float()
            else:
                vec = self.model.head.pooled_embeddings(self.model.encode_text([""]), audio_reprs)[1].float()
        else:
            vec = token_vector(audio_reprs)
        return F.normalize(vec.mean(0, keepdim=True), dim=-1)  # [1, D]

    def _stored_vectors(self, block: dict[str, torch.Tensor]) -> torch.Tensor:
        """Stored audio-audio vectors [B, D] of a block of windows."""
        return block[self.pooled_key] if self.pooled_key is not None else token_vector(block)

    @torch.inference_mode()
    def scores(self, query: Query, positions: np.ndarray | None = None) -> np.ndarray:
        """Exact scores [P] of the query against the windows at `positions` (default all, in id order)."""
        positions = np.arange(len(self)) if positions is None else np.asarray(positions, np.int64)
        return self._score_positions(*self._encode(query), positions)

    def _score_positions(self, text: dict[str, torch.Tensor] | None, qvec: torch.Tensor | None,
                         positions: np.ndarray) -> np.ndarray:
        """model.score(text, windows) — or the audio-audio cosine with qvec — for windows at positions [P]."""
        out = np.empty(len(positions), dtype=np.float32)
        keys = None if text is not None else [self.pooled_key] if self.pooled_key else None
        for a in range(0, len(positions), EXHAUSTIVE_BLOCK):
            block = _tensors(self.reprs.gather(positions[a:a + EXHAUSTIVE_BLOCK], keys), self.model.device)
            s = self.model.score(text, block)[0] if text is not None else self._stored_vectors(block) @ qvec[0]
            out[a:a + EXHAUSTIVE_BLOCK] = s.float().cpu().numpy()
        return out

    def _encode(self, query: Query) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
        """(text reprs, None) for a caption; (None, query vector [1, D]) for audio."""
        if isinstance(query, str):
            if not query.strip():
                raise InputError("empty text query")
            return self.model.encode_text([query]), None
        if isinstance(query, (Path, np.ndarray, torch.Tensor)):
            return None, self._query_vector(self._audio_query_reprs(query))
        raise InputError(f"a query is text (str) or audio (pathlib.Path or 1-D waveform), got {type(query).__name__}")

    @torch.inference_mode()
    def search(self, query: Query, k: int = 10, candidates: int = 100, per_file: bool = False,
               exhaustive: bool = False, nprobe: int | None = None) -> list[Hit]:
        """Best `k` windows (or files, with per_file) for a text (str) or audio (Path / waveform) query.

        candidates: windows recalled by the ANN and re-ranked exactly (at least k). exhaustive: score every
        window exactly instead (the reference the ANN path is tested against). nprobe: IVF lists to visit.
        """
        if k <= 0 or len(self) == 0:
            return []
        text, qvec = self._encode(query)
        if exhaustive or self.ann is None:
            positions = np.arange(len(self))
        else:
            if text is not None:
                probe = _tensors(self.reprs.gather(np.array([0])), self.model.device)
                qvec = self.model.head.pooled_embeddings(text, probe)[0].float()
            _, ids = ann_search(self.ann, self.ann_params, qvec.cpu().numpy(), max(int(candidates), k), nprobe)
            ids = ids[0][ids[0] >= 0]
            positions = np.searchsorted(self.table["id"], ids)
        scores = self._score_positions(text, qvec, positions)
        ids = self.table["id"][positions]
        files = self.table["file_id"][positions] if per_file else None
        return [self._hit(i, s) for i, s in rank(ids, scores, k, files)]

    def _hit(self, window_id: int, score: float) -> Hit:
        w = self.get(window_id)
        return Hit(w.id, w.path, w.start, w.end, score)


def search(index: Index | str | Path, query: Query, k: int = 10, candidates: int = 100,
           per_file: bool = False) -> list[Hit]:
    """`Index.open(index).search(query, ...)` for an index path, or `index.search(...)` for an open index."""
    if not isinstance(index, Index):
        index = Index.open(index)
    return index.search(query, k=k, candidates=candidates, per_file=per_file)
