"""Searching an index: ANN recall on the pooled embedding, then exact re-ranking with the index's head.

`Index` is the facade of an opened index; it holds one collaborator per responsibility and delegates to it:
`hade.index.query_encoder.QueryEncoder` turns a text, audio or `Like` query into what windows are scored
against, `hade.index.scoring.WindowScorer` scores stored windows against it block by block, and
`hade.index.indexed_audio.IndexedAudio` hands out indexed audio safely. The query and result records
(`Like`, `QueryVector`, `Window`, `Hit`) and `rank` live in `hade.index.query`; this module re-exports them.

Text query: the caption is encoded once; the ANN returns `candidates` windows by pooled cosine; their
stored representations (token features for THA, factors for DCR's CA, ...) are scored with
`model.score(text, windows)` and the best `k` returned. Heads without a pooled embedding (pure THA)
have no ANN: every window is scored with `model.score`, block by block (exhaustive). Audio and `Like`
queries are ranked by the cosine of their audio-audio vector (`hade.index.query_encoder`).

Serving: `search(..., guard=)` runs every use of the model (encoding the text, each batch of an audio
query's windows, each scoring block) inside ``with guard():`` and nothing else, so that a server can
interleave a fast text query between the batches of a long audio query. `open_audio` hands out an
indexed file only when it still resolves inside the indexed folder and is the file that was indexed
(size and mtime; `hade.index.indexed_audio`); `health` is the cheap status behind GET /health.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from hade.config import check_compute
from hade.errors import HadeError, InputError
from hade.index import integrity
from hade.index.ann import ann_search, load_ann, read_ann_params
from hade.index.finalize import ann_is_current
from hade.index.indexed_audio import IndexedAudio
from hade.index.info import IndexInfo
from hade.index.integrity import Health, Problem
from hade.index.compression import TokenCompression
from hade.index.query import Guard, Hit, Like, Query, QueryVector, Window, rank, token_vector, window_position
from hade.index.query_encoder import AUDIO_QUERY_BATCH, QueryEncoder
from hade.index.scoring import WindowScorer
from hade.index.vectors import IndexVectors, gather_vectors
from hade.index.reprs import ReprTable
from hade.index.meta import IndexMeta
from hade.index.store import DB_FILE, MODEL_DIR, Store, model_fingerprint
from hade.utils.device import resolve_device
from hade.utils.timing import Phases

# the names this module has always offered (`from hade.index.search import Like, Hit, rank, ...`)
__all__ = ["AUDIO_QUERY_BATCH", "Guard", "Hit", "Index", "Like", "Query", "QueryVector", "Window", "rank", "search",
           "token_vector"]


class Index:
    """A built index opened for searching (read-only). Use `Index.open(path)`."""

    def __init__(self, path: Path, store: Store, model, meta: IndexMeta, root: Path) -> None:
        self.path, self.store, self.model, self.meta, self.root = path, store, model, meta, root
        self.table = store.window_table()
        self.indexed_audio = IndexedAudio(path, root, self.table, store.files("ok"), meta.sample_rate,
                                          meta.follow_external_links)
        self.paths = self.indexed_audio.paths
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
        self.scorer = WindowScorer(path, meta, model, self.reprs, self.table)
        self.query_encoder = QueryEncoder(path, meta, model, self.scorer, self.table)

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
        return window_position(self.table["id"], window_id, self.path)

    def get(self, window_id: int) -> Window:
        p = self._pos(window_id)
        return Window(int(window_id), self.paths[int(self.table["file_id"][p])], float(self.table["start"][p]),
                      float(self.table["end"][p]))

    # ---- indexed audio (hade.index.indexed_audio) -----------------------------------------------
    def open_audio(self, window_id: int) -> tuple[BinaryIO, os.stat_result]:
        """Open the indexed file holding window `window_id` for reading its bytes: (binary file, its fstat).

        The path is resolved and must stay under the indexed folder; the *resolved* path is opened with
        O_NOFOLLOW (a symlink swapped in after resolving fails) and the open file must be a regular file
        with the size and mtime the index stored. KeyError for an unknown id; StaleFile with reason
        'missing', 'changed' or 'outside' otherwise (messages name the relative path only). The caller
        closes the file."""
        return self.indexed_audio.open(window_id)

    def audio_path(self, window_id: int) -> Path:
        """Resolved absolute path of the (indexed) file holding window `window_id`, after the checks of
        `open_audio` (StaleFile when it moved outside, vanished or changed)."""
        return self.indexed_audio.path(window_id)

    def window_audio(self, window_id: int) -> np.ndarray:
        """The window's samples [end_sample - start_sample] float32 at the model's rate (not padded)."""
        return self.indexed_audio.window(window_id)

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

    def health(self) -> Health:
        """`hade.index.integrity.Health` (ok, or the damaged files and the repair command) of the
        quick check (stat sizes of the database, every chunk array, the ANN and the model copy against
        what the index recorded; no hashing). Cheap; never raises."""
        return integrity.health(self.path, self.meta)

    def info(self) -> IndexInfo:
        """What this index is (`hade.index.info.IndexInfo`; its `to_dict()` is the JSON of GET /health)."""
        meta = self.meta
        comp = TokenCompression(self.store, meta)
        return IndexInfo(path=self.path, root=self.root, files=len(self.paths), unreadable_files=self.unreadable,
                         windows=len(self), fingerprint=meta.fingerprint, head=meta.head,
                         factorised=bool(self.model.head.capabilities.factorised), sample_rate=meta.sample_rate,
                         window=meta.window_seconds, hop=meta.hop_seconds, storage_dtype=meta.storage_dtype,
                         pooled_key=self.pooled_key, repr_keys=tuple(sorted(meta.repr_spec or {})),
                         shard=meta.shard, ann=self.ann_params, token_codec=comp.state(),
                         bytes_per_window=comp.stored_bytes_per_window(meta.repr_spec or {}))

    # ---- queries (encoding: hade.index.query_encoder, scoring: hade.index.scoring) -------------------
    @torch.inference_mode()
    def scores(self, query: Query, positions: np.ndarray | None = None, *, guard: Guard | None = None) -> np.ndarray:
        """Exact scores [P] of the query against the windows at `positions` (default all, in id order)."""
        guard = guard or contextlib.nullcontext
        positions = np.arange(len(self)) if positions is None else np.asarray(positions, np.int64)
        return self.scorer.score(*self.query_encoder.encode(query, guard), positions, guard)

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
            text, qvec = self.query_encoder.encode(query, guard, audio_batch)
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
        scores = self.scorer.score(text, qvec, positions, guard, phases)
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
        _, vec = self.query_encoder.encode(query, guard or contextlib.nullcontext, audio_batch)
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
