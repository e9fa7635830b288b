"""End of a build: compact the chunk arrays, (re)build the ANN index (merging is `hade.index.merge`).

Compaction rewrites the live rows in window-id order into chunks of `chunk_rows(spec)` rows (at most
`COMPACT_ROWS`, and at most `COMPACT_BYTES` of float arrays: rows are gathered, and float tokens encoded,
in memory) when the store has `MAX_CHUNKS` more chunks than that needs (a first build writes one per
encoder batch) or more than a quarter of its rows are dead (deleted or changed files). It changes where
rows live, never window ids or values (coded token rows are copied as codes).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
from tqdm.auto import tqdm

from hade.index.ann import DEFAULT_THRESHOLD, AnnParams, build_ann, ivf_sq8_bytes, read_ann_params, save_ann
from hade.index.compression import NO_CODEC, TokenCompression
from hade.index.meta import IndexMeta
from hade.index.reprs import ReprTable, rows_within
from hade.index.store import Placement, Store
from hade.utils.atomic import write_json_atomic

MAX_CHUNKS = 16
COMPACT_ROWS = 65536
COMPACT_BYTES = 256 << 20  # float bytes of one compacted or merged chunk (the THA CPU model: 1 551 windows)
DEAD_FRACTION = 0.25


def chunk_rows(spec: dict[str, dict[str, Any]]) -> int:
    """Rows of a compacted or merged chunk: COMPACT_ROWS, fewer when a window's arrays (as float, the way
    they are gathered) would make the chunk exceed COMPACT_BYTES."""
    return rows_within(spec, COMPACT_BYTES, COMPACT_ROWS)


def _ann_kind(count: int, threshold: int, pooled_key: str | None) -> str:
    if pooled_key is None:
        return "exhaustive"
    return "flat" if count < max(1, threshold) else "ivf"


def ann_is_current(store: Store, params: AnnParams | None = None) -> bool:
    params = params or read_ann_params(store.root)
    return params is not None and params.generation == store.generation and (
        params.kind == "exhaustive" or (store.root / params.file).is_file())


def compact(store: Store, force: bool = False, progress: bool = False) -> bool:
    """Rewrite live rows into few large chunks when fragmented, and compress the float token chunks of an
    index that has a token codec factory (fitting its codec first if it has none); returns whether it did.
    Rows keep their codec set: coded rows are copied as codes, never decoded and encoded again."""
    meta = store.meta()
    if store.count_windows() == 0 or not meta.reprs_known:
        return False
    compression = TokenCompression(store, meta)
    table = store.window_table()
    reprs = ReprTable(store, table["chunk"], table["row"], meta.repr_spec)
    groups = _groups_to_rewrite(store, meta, reprs, compression, force, progress)
    if not groups:
        return False
    _rewrite(store, table, reprs, compression, groups, progress)
    store.cleanup(keep_codec=compression.current)
    return True


def _groups_to_rewrite(store: Store, meta: IndexMeta, reprs: ReprTable, compression: TokenCompression,
                       force: bool, progress: bool = False) -> dict[str | None, np.ndarray]:
    """The codec groups ({codec set id or None: positions}) compaction rewrites: all when fragmented (or
    `force`), else only the float chunks when they are to be compressed (the codec fitted here on their
    first `fit_windows` windows when the index has none yet and they are enough to fit it), else none."""
    total_rows, chunks = store.chunk_totals()
    live = store.count_windows()
    needed = -(-live // chunk_rows(meta.repr_spec))
    fragmented = force or chunks > needed + MAX_CHUNKS or (total_rows and live < (1 - DEAD_FRACTION) * total_rows)
    groups = _codec_groups(reprs)
    keys = compression.resolve_keys(meta.repr_spec, meta.pooled_key)
    convert = bool(keys) and compression.factory != NO_CODEC and None in groups
    if convert and compression.current is None:
        spec = meta.repr_spec
        convert = len(groups[None]) >= compression.windows_needed(spec) and compression.fit(
            reprs.gather(groups[None][:compression.fit_windows(spec)], keys), progress=progress) is None
        # else too few tokens to fit (yet): they stay float
    if fragmented:
        return groups
    return {None: groups[None]} if convert else {}


def _rewrite(store: Store, table: dict[str, np.ndarray], reprs: ReprTable, compression: TokenCompression,
             groups: dict[str | None, np.ndarray], progress: bool) -> None:
    """Write each group's rows in id order into chunks of `chunk_rows` (float token keys encoded when the
    index has a codec) and point the windows at them, in one transaction."""
    placements: list[Placement] = []
    rows: dict[int, tuple[int, str | None]] = {}
    step = chunk_rows(reprs.spec)
    for positions in groups.values():
        for a in tqdm(range(0, len(positions), step), desc="compact", unit="chunk", disable=not progress,
                      leave=False):
            pos = positions[a:a + step]
            arrays, codec_id = reprs.gather_stored(pos)
            if codec_id is None:
                arrays, codec_id = compression.encode(arrays)
            cid = store.write_chunk(arrays)
            rows[cid] = (len(pos), codec_id)
            placements.extend(Placement(int(table["id"][p]), cid, i) for i, p in enumerate(pos))
    with store.transaction():
        for cid in sorted(rows):
            store.register_chunk(cid, *rows[cid])
        store.move_windows(placements)
        store.update_meta(token_codec=compression.state())


def _float_tokens_to_compress(store: Store, meta: IndexMeta) -> bool:
    """Whether the index has a token codec factory, token keys (or none decided yet) and float chunks."""
    return TokenCompression.may_compress(meta) and None in store.chunk_codecs().values()


def _codec_groups(reprs: ReprTable) -> dict[str | None, np.ndarray]:
    """{codec set id (None: float chunks): positions of its windows, in id order}, float first."""
    codec_of = reprs.codec_of(np.arange(len(reprs)))
    groups: dict[str | None, list[int]] = {}
    for p, c in enumerate(codec_of):
        groups.setdefault(c, []).append(p)
    return {c: np.asarray(groups[c], dtype=np.int64) for c in sorted(groups, key=lambda c: (c is not None, c or ""))}


POOLED_IN_MEMORY_BYTES = 1 << 30  # above this, the ANN's input vectors are staged in a file (memmap)
POOLED_STAGING = ".pooled-staging.npy"  # in arrays/: a dot name, so `Store.cleanup` removes one a kill left


@contextlib.contextmanager
def pooled_vectors(store: Store, block: int = 65536,
                   in_memory_bytes: int = POOLED_IN_MEMORY_BYTES) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``with pooled_vectors(store) as (ids, vectors)``: ids [N] int64 and pooled embeddings [N, D] of all
    windows in id order, in the store's dtype (float16 by default; `build_ann` reads them in blocks).

    Up to `in_memory_bytes` they are an array; above, a memory-mapped file in the index's arrays folder,
    removed on exit, so that building the ANN of 10M windows does not hold a second copy of them in memory."""
    meta = store.meta()
    table = store.window_table()
    key = meta.pooled_key
    spec = meta.repr_spec[key]
    dim = spec["shape"][-1]
    dtype = np.dtype(spec["dtype"])
    reprs = ReprTable(store, table["chunk"], table["row"], meta.repr_spec)
    staging = store.arrays_dir / POOLED_STAGING
    spill = len(reprs) * dim * dtype.itemsize > in_memory_bytes
    out = (np.lib.format.open_memmap(staging, mode="w+", dtype=dtype, shape=(len(reprs), dim)) if spill
           else np.empty((len(reprs), dim), dtype=dtype))
    try:
        for a in range(0, len(reprs), block):
            pos = np.arange(a, min(len(reprs), a + block))
            out[pos] = reprs.gather(pos, [key])[key].reshape(len(pos), dim)  # exact: the stored dtype
        yield table["id"], out
    finally:
        del out
        if spill:
            staging.unlink(missing_ok=True)


def finalize(store: Store, threshold: int = DEFAULT_THRESHOLD, progress: bool = False,
             memory_budget: int | None = None) -> AnnParams:
    """Compress float token chunks (when the index has a token codec), compact if fragmented and rebuild
    the ANN when the store changed since it was built (or its kind or code no longer matches `threshold`
    and `memory_budget`, bytes: IVF-PQ when the 8-bit IVF would exceed it). Returns the ANN's parameters."""
    meta = store.meta()
    count = store.count_windows()
    kind = _ann_kind(count, threshold, meta.pooled_key)
    params = read_ann_params(store.root)
    compacted = _float_tokens_to_compress(store, meta) and compact(store, progress=progress)
    if params is not None and ann_is_current(store, params) and params.kind == kind \
            and _pq_wanted(params, memory_budget) == params.code.startswith("pq"):
        return params
    if not compacted:  # a compaction that compressed tokens also rewrote fragmented chunks
        compact(store, progress=progress)
    gen = store.generation
    if kind == "exhaustive":
        params = AnnParams("exhaustive", count, 0, generation=gen)
        write_json_atomic(store.root / "ann.json", vars(params))
        for old in store.root.glob("ann-*.faiss"):
            old.unlink()
        _record_ann(store, None)
        return params
    if count == 0 or not meta.reprs_known:
        index, params = build_ann(np.zeros((0, 1), np.float32), np.zeros(0, np.int64), threshold=threshold,
                                  memory_budget=memory_budget)
    else:
        with pooled_vectors(store) as (ids, vecs):
            index, params = build_ann(vecs, ids, threshold=threshold, memory_budget=memory_budget)
    save_ann(store.root, index, params, gen)
    _record_ann(store, params.file)
    return params


def _pq_wanted(params: AnnParams, memory_budget: int | None) -> bool:
    """Whether an IVF of `params`' size should have product-quantised codes under `memory_budget`."""
    return (params.kind == "ivf" and memory_budget is not None
            and ivf_sq8_bytes(params.count, params.dim) > memory_budget)


def _record_ann(store: Store, file: str | None) -> None:
    """Replace the integrity record of the ANN file (None: there is none, exhaustive search)."""
    with store.transaction():
        store.forget_files("ann-")
        if file is not None:
            store.record_files([file])
