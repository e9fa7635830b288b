"""Searching an index: ANN recall on the pooled embedding, then exact re-ranking with the index's head.

Text query: the caption is encoded once; the ANN returns `candidates` windows by pooled cosine; their
stored representations (token features for THA, factors for DCR's CA, ...) are scored with
`model.score(text, windows)` and the best `k` returned. Heads without a pooled embedding (pure THA)
have no ANN: every window is scored with `model.score`, block by block (exhaustive).

Audio query (query by example): the query is cut into windows like indexed files, encoded in batches of
`AUDIO_QUERY_BATCH` windows (only a running sum of their vectors is kept, so memory does not grow with
the query's length beyond the waveform), and its pooled embeddings averaged and L2-normalised; windows
are ranked by cosine to the stored pooled embeddings (ANN recall, then the exact cosine). This is the
score for every head: the non-factorised heads define no audio-audio score. Pure THA heads use, instead,
the cosine of the concatenated per-level means of the projected audio tokens (exhaustive).

Query by indexed windows (`Like`, "more like this"): the normalised mean of the windows' stored audio-audio
vectors, ranked like an audio query; nothing is decoded or encoded, so it costs an ANN probe and dot
products. Its hits leave out the query's own files (or, with `same_file`, only its own windows).

Serving: `search(..., guard=)` runs every use of the model (encoding the text, each batch of an audio
query's windows, each scoring block) inside ``with guard():`` and nothing else, so that a server can
interleave a fast text query between the batches of a long audio query. `open_audio` hands out an
indexed file only when it still resolves inside the indexed folder and is the file that was indexed
(size and mtime); `health` is the cheap status behind GET /health.
"""
from __future__ import annotations

import contextlib
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, ContextManager, Union

import numpy as np
import torch
import torch.nn.functional as F

from hade.config import check_compute
from hade.data.audio import load_audio
from hade.errors import HadeError, InputError, StaleFile
from hade.index import integrity
from hade.index.ann import ann_search, load_ann, read_ann_params
from hade.index.finalize import ann_is_current
from hade.index.integrity import Problem
from hade.index.compression import TokenCompression
from hade.index.vectors import IndexVectors, gather_vectors
from hade.index.reprs import ReprTable, rows_within
from hade.index.meta import IndexMeta
from hade.index.store import DB_FILE, MODEL_DIR, Store, chunk_name, model_fingerprint
from hade.index.windows import window_batches, window_bounds
from hade.utils.device import resolve_device
from hade.utils.timing import Phases


@dataclass(frozen=True)
class Like:
    """A query by indexed windows: sounds like these (`Index.like` builds one from a file path and time).

    The hits leave out every window of the files these windows belong to, or with `same_file` only the
    windows themselves (other moments of the same recording may then be found)."""

    window_ids: tuple[int, ...]
    same_file: bool = False

    def __post_init__(self) -> None:
        ids = tuple(int(i) for i in self.window_ids)
        if not ids:
            raise InputError("Like(window_ids): give at least one indexed window id")
        object.__setattr__(self, "window_ids", ids)


@dataclass(frozen=True, eq=False)
class QueryVector:
    """An audio or `Like` query already turned into its audio-audio vector (`Index.query_vector`): searching
    with it ranks exactly as the query it came from, without decoding or encoding anything again (a server
    keeps it to explain the results of an upload). vector: [D] float32, L2-normalised."""

    vector: np.ndarray


Query = Union[str, Path, np.ndarray, torch.Tensor, Like, QueryVector]
Guard = Callable[[], ContextManager[Any]]
EXHAUSTIVE_BLOCK = 4096  # windows scored at a time, at most; fewer when their arrays exceed GATHER_BYTES
GATHER_BYTES = 128 << 20  # float32 bytes of the windows gathered for one scoring block
SCORE_SLACK = 1e-2  # relative: float16 unit vectors and decoded tokens move a cosine by ~1e-3
AUDIO_QUERY_BATCH = 4  # windows of an audio query per model call (one `guard` each); 4, not 8: a text query
# served between batches waits for at most one, and 8 raised text p95 under uploads from 2.2x to 2.9x
# (benchmarks/load.py --mixed --model demo, docs/security.md)


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

    def __init__(self, path: Path, store: Store, model, meta: IndexMeta, root: Path) -> None:
        self.path, self.store, self.model, self.meta, self.root = path, store, model, meta, root
        self.table = store.window_table()
        files = store.files("ok")
        self.paths = {f.id: f.path for f in files}
        self._signature = {f.id: (int(f.size), int(f.mtime_ns)) for f in files}  # what open_audio must find
        self.unreadable = store.count_files("error")
        self.reprs = ReprTable(store, self.table["chunk"], self.table["row"], meta.repr_spec or {},
                               random_access=True)
        self.ann_params = read_ann_params(path)
        self.ann = None
        if self.ann_params is not None and self.ann_params.kind in ("flat", "ivf"):
            try:
                self.ann = load_ann(path, self.ann_params)
            except RuntimeError as e:  # faiss: truncated or garbage file
                raise integrity.damaged(path, Problem(self.ann_params.file, "corrupt (faiss cannot read it: "
                                                      f"{' '.join(str(e).split())[:120]})", "ann"), meta) from None
        self.pooled_key = meta.pooled_key
        self.follow_external_links = meta.follow_external_links

    @classmethod
    def open(cls, path: str | Path, device: str | torch.device = "cpu", root: str | Path | None = None,
             verify: bool = True, compute: str = "fp32") -> "Index":
        """Open INDEX for searching with its own model copy. root: where the indexed files are now (default:
        the folder they were indexed from). verify: check the model copy against the stored fingerprint.
        compute: "fp32", "bf16" or "fp16" (CUDA) autocast for encoding queries (`hade.load`).

        Raises IndexDamaged (naming the damaged file and the command that repairs it) when the quick
        integrity check fails: the database, a chunk array, the ANN or the model copy missing, truncated
        or unreadable (`hade.index.integrity`)."""
        path = Path(path)
        device = resolve_device(device, where="device")
        check_compute(compute, device.type, where="compute")
        if not (path / DB_FILE).is_file():
            raise InputError(f"{path}: not a hade index (no {DB_FILE}); build one with `hade index`")
        if (problem := integrity.db_header_problem(path)) is not None:
            raise integrity.damaged(path, Problem(DB_FILE, problem, "db"), None)
        meta: IndexMeta | None = None
        store = None
        try:  # close the SQLite connection when the index cannot be opened
            store = Store(path)
            meta = store.meta()
            store.repair = integrity.repair_command(path, meta)
            return cls._open_store(path, store, meta, device, root, verify, compute)
        except BaseException as e:
            if store is not None:
                store.close()
            if (err := integrity.damage_from_exception(path, e, meta)) is not None and err is not e:
                raise err from None
            raise

    @classmethod
    def _open_store(cls, path: Path, store: Store, meta: IndexMeta, device: str | torch.device,
                    root: str | Path | None, verify: bool, compute: str) -> "Index":
        if not meta.created:
            raise InputError(f"{path}: empty index (interrupted before anything was stored); run `hade index`")
        problems = integrity.quick_problems(store, meta)
        if problems:
            raise integrity.damaged(path, problems[0], meta)
        integrity.verify_on_open(store, meta)
        if not ann_is_current(store):
            raise InputError(f"{path}: the index changed after its ANN was built (interrupted or running "
                             "`hade index`?); run `hade index` again to finish it")
        weights = Problem(f"{MODEL_DIR}/model.safetensors", "not the model the index was built with (its "
                          "fingerprint differs)", "model")
        if verify and model_fingerprint(store.model_dir) != meta.fingerprint:
            raise integrity.damaged(path, weights, meta)
        stop_verifying = threading.Event()
        integrity.verify_chunks_later(store, meta, stop_verifying)  # hashing overlaps loading the model
        try:
            index = cls(path, store, _load_model(path, store, meta, device, compute), meta,
                        Path(root) if root is not None else Path(meta.root))
        except BaseException:
            stop_verifying.set()
            raise
        index._stop_verifying = stop_verifying
        return index

    def close(self) -> None:
        getattr(self, "_stop_verifying", threading.Event()).set()
        self.reprs.close()
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

    def _resolve(self, window_id: int) -> tuple[str, str, tuple[int, int]]:
        """(relative path, resolved absolute path, stored (size, mtime_ns)) of the window's file; StaleFile
        'outside' when it resolves outside the indexed folder (unless built with follow_external_links)."""
        p = self._pos(window_id)
        fid = int(self.table["file_id"][p])
        rel = self.paths[fid]
        if rel.startswith("/") or ".." in rel.split("/"):
            raise StaleFile(f"{rel}: refusing a file path outside the indexed folder", reason="outside")
        root = os.path.realpath(self.root)
        target = os.path.realpath(os.path.join(root, rel))
        if not self.follow_external_links and os.path.commonpath([root, target]) != root:
            raise StaleFile(f"{rel} now resolves outside the indexed folder (a symbolic link?); refusing to "
                            "serve it", reason="outside")
        return rel, target, self._signature[fid]

    def open_audio(self, window_id: int) -> tuple[BinaryIO, os.stat_result]:
        """Open the indexed file holding window `window_id` for reading its bytes: (binary file, its fstat).

        The path is resolved and must stay under the indexed folder; the *resolved* path is opened with
        O_NOFOLLOW (a symlink swapped in after resolving fails) and the open file must be a regular file
        with the size and mtime the index stored. KeyError for an unknown id; StaleFile with reason
        'missing', 'changed' or 'outside' otherwise (messages name the relative path only). The caller
        closes the file."""
        rel, target, (size, mtime_ns) = self._resolve(window_id)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise StaleFile(f"{rel} is no longer in the indexed folder; re-run `hade index` to update the index",
                            reason="missing") from None
        except OSError as e:
            raise StaleFile(f"{rel} cannot be opened ({e.strerror or e}); it changed after it was indexed, re-run "
                            "`hade index`", reason="changed") from None
        f = os.fdopen(fd, "rb")
        try:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size != size or st.st_mtime_ns != mtime_ns:
                raise StaleFile(f"{rel} is not the file that was indexed (size or modification time changed); "
                                "re-run `hade index` to update the index", reason="changed")
        except BaseException:
            f.close()
            raise
        return f, st

    def audio_path(self, window_id: int) -> Path:
        """Resolved absolute path of the (indexed) file holding window `window_id`, after the checks of
        `open_audio` (StaleFile when it moved outside, vanished or changed)."""
        f, _ = self.open_audio(window_id)
        f.close()
        return Path(self._resolve(window_id)[1])

    def window_audio(self, window_id: int) -> np.ndarray:
        """The window's samples [end_sample - start_sample] float32 at the model's rate (not padded)."""
        p = self._pos(window_id)
        wave = load_audio(self.audio_path(window_id), self.meta.sample_rate)
        return wave[int(self.table["start_sample"][p]):int(self.table["end_sample"][p])]

    def vectors(self) -> IndexVectors:
        """Every window's pooled vector (the stored `pooled_key`, the one the ANN recalls with) as float32
        [N, D], with window ids, file paths (relative to the indexed folder) and start/end seconds, in id
        order; for a vector database of one's own (`hade export`). InputError for a head without pooled
        vectors (pure THA). See `hade.index.export`."""
        if self.pooled_key is None:
            from hade.models.heads import pooled_heads

            raise InputError(f"{self.path}: head {self.meta.head!r} stores no pooled window vectors (it ranks "
                             f"with token features only); export an index built with a head that has them: "
                             f"{', '.join(pooled_heads())}")
        return gather_vectors(self.reprs, self.table, self.paths, self.pooled_key)

    def health(self) -> dict[str, Any]:
        """{"status": "ok" | "degraded", "problems": [{"file", "problem"}], "repair": command | None}: the
        quick check (stat sizes of the database, every chunk array, the ANN and the model copy against
        what the index recorded; no hashing). Cheap; never raises."""
        return integrity.health(self.path, self.meta)

    def info(self) -> dict[str, Any]:
        meta = self.meta
        return {"path": str(self.path), "root": str(self.root), "files": len(self.paths),
                "unreadable_files": self.unreadable, "windows": len(self), "fingerprint": meta.fingerprint,
                "head": meta.head, "factorised": bool(self.model.head.capabilities.factorised),
                "sample_rate": meta.sample_rate, "window": meta.window_seconds, "hop": meta.hop_seconds,
                "precision": meta.storage_dtype, "storage_dtype": meta.storage_dtype,
                "pooled_key": self.pooled_key, "repr_keys": sorted(meta.repr_spec or {}),
                "shard": meta.to_dict(("shard",))["shard"],
                "ann": vars(self.ann_params) if self.ann_params else None, **self._storage_info()}

    def _storage_info(self) -> dict[str, Any]:
        """token_codec (factory, keys, current set; factory 'none': float tokens) and the bytes a window's
        arrays take with it."""
        comp = TokenCompression(self.store, self.meta)
        return {"token_codec": comp.describe(),
                "bytes_per_window": comp.stored_bytes_per_window(self.meta.repr_spec or {})}

    # ---- queries ------------------------------------------------------------------------------
    def _audio_wave(self, query: Path | np.ndarray | torch.Tensor) -> np.ndarray:
        sr = self.meta.sample_rate
        if isinstance(query, Path):
            return load_audio(query, sr)
        wave = np.asarray(query.detach().cpu() if isinstance(query, torch.Tensor) else query, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise InputError(f"an audio query is a 1-D waveform at {sr} Hz, got shape {wave.shape}")
        return wave

    def _window_vectors(self, reprs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Audio-audio vectors [B, D] of freshly encoded windows (model use: call inside the guard)."""
        if self.meta.storage_dtype == "float16":  # as if stored, so a query equals its own indexed windows
            reprs = {k: v.half().float() if v.is_floating_point() else v for k, v in reprs.items()}
        if self.pooled_key is None:
            return token_vector(reprs)
        if self.pooled_key in reprs:
            return reprs[self.pooled_key].float()
        return self.model.head.pooled_audio(reprs).float()

    @torch.inference_mode()
    def _audio_query_vector(self, query: Path | np.ndarray | torch.Tensor, guard: Guard,
                            batch: int = AUDIO_QUERY_BATCH) -> torch.Tensor:
        """The query vector [1, D]: the normalised mean of its windows' vectors, encoded `batch` windows at
        a time (one guard each); only the running sum is kept between batches."""
        wave = self._audio_wave(query)
        win = self.meta.window_samples
        bounds = window_bounds(len(wave), win, self.meta.hop_samples)
        total: torch.Tensor | None = None
        for windows in window_batches(wave, bounds, win, batch):
            with guard():
                vecs = self._window_vectors(self.model.encode_audio(torch.from_numpy(windows).to(self.model.device)))
            part_sum = vecs.sum(0, keepdim=True)
            total = part_sum if total is None else total + part_sum
        return F.normalize(total / len(bounds), dim=-1)

    def _stored_vectors(self, block: dict[str, torch.Tensor]) -> torch.Tensor:
        """Stored audio-audio vectors [B, D] of a block of windows."""
        return block[self.pooled_key] if self.pooled_key is not None else token_vector(block)

    @torch.inference_mode()
    def scores(self, query: Query, positions: np.ndarray | None = None, *, guard: Guard | None = None) -> np.ndarray:
        """Exact scores [P] of the query against the windows at `positions` (default all, in id order)."""
        guard = guard or contextlib.nullcontext
        positions = np.arange(len(self)) if positions is None else np.asarray(positions, np.int64)
        return self._score_positions(*self._encode(query, guard), positions, guard)

    def _score_positions(self, text: dict[str, torch.Tensor] | None, qvec: torch.Tensor | None,
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
                    block = _tensors(self.reprs.gather(part, keys), self.model.device)
                with phases("score"), guard():
                    out[a:a + step] = (self._stored_vectors(block) @ qvec[0]).float().cpu().numpy()
                continue
            codec_ids = np.array(self.reprs.codec_of(part), dtype=object)
            for codec_id in dict.fromkeys(codec_ids.tolist()):  # each codec set scored in its own space
                sel = np.nonzero(codec_ids == codec_id)[0]
                if codec_id not in rotated_texts:
                    rotated_texts[codec_id] = self._text_in_space_of(text, codec_id)
                text_here, rotated = rotated_texts[codec_id]
                with phases("gather"):
                    block = _tensors(self.reprs.gather(part[sel], keys, rotated), self.model.device)
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
        raise integrity.damaged(self.path, Problem(rel, f"damaged (window {int(self.table['id'][positions[i]])} "
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

    def _encode(self, query: Query, guard: Guard, audio_batch: int = AUDIO_QUERY_BATCH
                ) -> tuple[dict[str, torch.Tensor] | None, torch.Tensor | None]:
        """(text reprs, None) for a caption; (None, query vector [1, D]) for audio."""
        if isinstance(query, str):
            if not query.strip():
                raise InputError("empty text query")
            with guard():
                return self.model.encode_text([query]), None
        if isinstance(query, (Path, np.ndarray, torch.Tensor)):
            return None, self._audio_query_vector(query, guard, audio_batch)
        if isinstance(query, Like):
            return None, self._like_vector(query)
        if isinstance(query, QueryVector):
            vec = torch.as_tensor(np.asarray(query.vector, dtype=np.float32).reshape(1, -1), device=self.model.device)
            return None, vec
        raise InputError("a query is text (str), audio (pathlib.Path or 1-D waveform) or Like(window ids), got "
                         f"{type(query).__name__}")

    def _like_vector(self, query: Like) -> torch.Tensor:
        """[1, D]: the normalised mean of the stored audio-audio vectors of `query`'s windows (KeyError for
        an unknown id)."""
        positions = np.array([self._pos(i) for i in query.window_ids], dtype=np.int64)
        keys = [self.pooled_key] if self.pooled_key else None
        vecs = self._stored_vectors(_tensors(self.reprs.gather(positions, keys), self.model.device)).float()
        return F.normalize(vecs.mean(0, keepdim=True), dim=-1)

    def _excluded(self, query: Query) -> np.ndarray | None:
        """Positions a `Like` query's hits leave out (its windows, or every window of their files)."""
        if not isinstance(query, Like):
            return None
        positions = np.array([self._pos(i) for i in query.window_ids], dtype=np.int64)
        if query.same_file:
            return positions
        return np.flatnonzero(np.isin(self.table["file_id"], self.table["file_id"][positions]))

    def like(self, path: str | Path, at: float | None = None, same_file: bool = False) -> Like:
        """A `Like` query for an indexed file: the window around `at` seconds (the one whose centre is
        nearest), or all its windows when `at` is None. `path` is as indexed (relative to the indexed
        folder), or a path inside `self.root`."""
        rel = Path(path).as_posix()
        if Path(path).is_absolute():
            with contextlib.suppress(ValueError):
                rel = Path(os.path.realpath(path)).relative_to(os.path.realpath(self.root)).as_posix()
        file_ids = [i for i, p in self.paths.items() if p == rel]
        if not file_ids:
            raise InputError(f"{path}: not a file of the index {self.path} (paths are relative to {self.root})")
        positions = np.flatnonzero(self.table["file_id"] == file_ids[0])
        if at is not None:
            if not at >= 0:
                raise InputError(f"--at must be a time in seconds >= 0, got {at}")
            if at > (end := float(self.table["end"][positions].max())):
                raise InputError(f"--at {at:g}: {path} ends at {end:g} s; give a time within it")
            centres = (self.table["start"][positions] + self.table["end"][positions]) / 2
            positions = positions[[int(np.argmin(np.abs(centres - at)))]]
        return Like(tuple(int(i) for i in self.table["id"][positions]), same_file=same_file)

    @torch.inference_mode()
    def search(self, query: Query, k: int = 10, candidates: int = 100, per_file: bool = False,
               exhaustive: bool = False, nprobe: int | None = None, *, guard: Guard | None = None,
               timing: dict[str, float] | None = None, audio_batch: int = AUDIO_QUERY_BATCH) -> list[Hit]:
        """Best `k` windows (or files, with per_file) for a text (str), audio (Path / waveform) or `Like` query.

        candidates: windows recalled by the ANN and re-ranked exactly (at least k). exhaustive: score every
        window exactly instead (the reference the ANN path is tested against). nprobe: IVF lists to visit.
        guard: a context-manager factory entered around every use of the model (text encoding, each
        batch of an audio query, each scoring block) and nothing else — a server's inference lock.
        audio_batch: windows of an audio query encoded per model call (per `guard`): fewer let a server's
        text queries in sooner, more encode the upload faster.
        timing: a dict that receives the wall milliseconds of each phase: "encode" (the query), "ann"
        (pooled query vector and ANN probe), "gather" (reading and decoding the candidates' stored
        features), "score" (the head's re-scoring) and "hits" (ranking and the hits' records).
        """
        if isinstance(audio_batch, bool) or not isinstance(audio_batch, int) or audio_batch < 1:
            raise InputError(f"audio_batch must be a positive number of windows, got {audio_batch!r}")
        if k <= 0 or len(self) == 0:
            return []
        guard = guard or contextlib.nullcontext
        phases = Phases(timing)
        with phases("encode"):
            text, qvec = self._encode(query, guard, audio_batch)
        excluded = self._excluded(query)
        if exhaustive or self.ann is None:
            positions = np.arange(len(self))
        else:
            with phases("ann"):
                if text is not None:
                    with guard():
                        qvec = self.model.head.pooled_text(text).float()
                wanted = max(int(candidates), k) + (len(excluded) if excluded is not None else 0)
                _, ids = ann_search(self.ann, self.ann_params, qvec.cpu().numpy(), wanted, nprobe)
                ids = ids[0][ids[0] >= 0]
                positions = np.searchsorted(self.table["id"], ids)
        if excluded is not None:
            positions = positions[~np.isin(positions, excluded)]
        scores = self._score_positions(text, qvec, positions, guard, phases)
        with phases("hits"):
            ids = self.table["id"][positions]
            files = self.table["file_id"][positions] if per_file else None
            return [self._hit(i, s) for i, s in rank(ids, scores, k, files)]

    @torch.inference_mode()
    def query_vector(self, query: Path | np.ndarray | torch.Tensor | Like, *, guard: Guard | None = None,
                     audio_batch: int = AUDIO_QUERY_BATCH) -> QueryVector:
        """The audio-audio vector an audio (file or waveform) or `Like` query is ranked by, as a `QueryVector`
        to search with (and keep): `search(query_vector(q))` gives `search(q)`'s hits (a `Like`'s own files
        are then not left out). Audio is encoded `audio_batch` windows per `guard`."""
        if isinstance(query, str) or not isinstance(query, (Path, np.ndarray, torch.Tensor, Like)):
            raise InputError(f"query_vector: an audio query (path or waveform) or Like, got {type(query).__name__}")
        _, vec = self._encode(query, guard or contextlib.nullcontext, audio_batch)
        return QueryVector(vec[0].float().cpu().numpy())

    @torch.inference_mode()
    def file_scores(self, window_id: int, query: Query, *, guard: Guard | None = None
                    ) -> tuple[list[Window], np.ndarray]:
        """Every window of the file holding `window_id`, in time order, and the query's score against each
        [W]: the exact scores `search` ranks by, from the stored representations (no audio decoded; a text
        is encoded once). KeyError for an unknown id."""
        fid = self.table["file_id"][self._pos(window_id)]
        positions = np.flatnonzero(self.table["file_id"] == fid)
        positions = positions[np.argsort(self.table["start"][positions], kind="stable")]
        scores = self.scores(query, positions, guard=guard)
        return [self.get(int(i)) for i in self.table["id"][positions]], scores

    def _hit(self, window_id: int, score: float) -> Hit:
        w = self.get(window_id)
        return Hit(w.id, w.path, w.start, w.end, score)


def _load_model(path: Path, store: Store, meta: IndexMeta, device: str | torch.device, compute: str):
    """The index's model copy; IndexDamaged (repair with --ckpt) when it cannot be used."""
    from hade.checkpoint import load

    try:
        return load(store.model_dir, device=device, compute=compute)
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - any failure to read the model copy: --ckpt repairs it
        what = str(e) if isinstance(e, HadeError) else f"{type(e).__name__}: {e}"
        raise integrity.damaged(path, Problem(f"{MODEL_DIR}/", f"unusable ({' '.join(what.split())[:300]})",
                                              "model"), meta) from None


def search(index: Index | str | Path, query: Query, k: int = 10, candidates: int = 100,
           per_file: bool = False) -> list[Hit]:
    """`Index.open(index).search(query, ...)` for an index path, or `index.search(...)` for an open index."""
    if not isinstance(index, Index):
        index = Index.open(index)
    return index.search(query, k=k, candidates=candidates, per_file=per_file)
