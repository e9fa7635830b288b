"""End of a build: compact the chunk arrays, (re)build the ANN index; and `hade index merge`.

Compaction rewrites the live rows in window-id order into chunks of `chunk_rows(spec)` rows (at most
`COMPACT_ROWS`, and at most `COMPACT_BYTES` of float arrays: rows are gathered, and float tokens encoded,
in memory) when the store has `MAX_CHUNKS` more chunks than that needs (a first build writes one per
encoder batch) or more than a quarter of its rows are dead (deleted or changed files). It changes where
rows live, never window ids or values (coded token rows are copied as codes).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm.auto import tqdm

from hade.errors import InputError
from hade.index.ann import DEFAULT_THRESHOLD, AnnParams, build_ann, ivf_sq8_bytes, read_ann_params, save_ann
from hade.index.compression import NO_CODEC, TokenCompression
from hade.index.reprs import ReprTable, rows_within
from hade.index.store import STORAGE_DTYPE_KEY, FileRecord, Placement, Store, WindowRecord, copy_model
from hade.utils.atomic import atomic_dir, write_json_atomic

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
    if store.count_windows() == 0 or "repr_spec" not in meta:
        return False
    compression = TokenCompression(store, meta)
    table = store.window_table()
    reprs = ReprTable(store, table["chunk"], table["row"], meta["repr_spec"])
    groups = _groups_to_rewrite(store, meta, reprs, compression, force, progress)
    if not groups:
        return False
    _rewrite(store, table, reprs, compression, groups, progress)
    store.cleanup()
    return True


def _groups_to_rewrite(store: Store, meta: dict[str, Any], reprs: ReprTable, compression: TokenCompression,
                       force: bool, progress: bool = False) -> dict[str | None, np.ndarray]:
    """The codec groups ({codec set id or None: positions}) compaction rewrites: all when fragmented (or
    `force`), else only the float chunks when they are to be compressed (the codec fitted here on their
    first `fit_windows` windows when the index has none yet and they are enough to fit it), else none."""
    total_rows, chunks = store.chunk_totals()
    live = store.count_windows()
    needed = -(-live // chunk_rows(meta["repr_spec"]))
    fragmented = force or chunks > needed + MAX_CHUNKS or (total_rows and live < (1 - DEAD_FRACTION) * total_rows)
    groups = _codec_groups(reprs)
    keys = compression.resolve_keys(meta["repr_spec"], meta.get("pooled_key"))
    convert = bool(keys) and compression.factory != NO_CODEC and None in groups
    if convert and compression.current is None:
        spec = meta["repr_spec"]
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
        store.set_meta(token_codec=compression.meta())


def _float_tokens_to_compress(store: Store, meta: dict[str, Any]) -> bool:
    """Whether the index has a token codec factory, token keys (or none decided yet) and float chunks."""
    tc = meta.get("token_codec") or {}
    if tc.get("factory", NO_CODEC) == NO_CODEC or tc.get("keys") == []:
        return False
    return None in store.chunk_codecs().values()


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
    key = meta["pooled_key"]
    spec = meta["repr_spec"][key]
    dim = spec["shape"][-1]
    dtype = np.dtype(spec["dtype"])
    reprs = ReprTable(store, table["chunk"], table["row"], meta["repr_spec"])
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
             memory_budget: int | None = None) -> dict[str, Any]:
    """Compress float token chunks (when the index has a token codec), compact if fragmented and rebuild
    the ANN when the store changed since it was built (or its kind or code no longer matches `threshold`
    and `memory_budget`, bytes: IVF-PQ when the 8-bit IVF would exceed it). Returns the ANN parameters."""
    meta = store.meta()
    count = store.count_windows()
    kind = _ann_kind(count, threshold, meta.get("pooled_key"))
    params = read_ann_params(store.root)
    compacted = _float_tokens_to_compress(store, meta) and compact(store, progress=progress)
    if params is not None and ann_is_current(store, params) and params.kind == kind \
            and _pq_wanted(params, memory_budget) == params.code.startswith("pq"):
        return vars(params)
    if not compacted:  # a compaction that compressed tokens also rewrote fragmented chunks
        compact(store, progress=progress)
    gen = store.generation
    if kind == "exhaustive":
        params = AnnParams("exhaustive", count, 0, generation=gen)
        write_json_atomic(store.root / "ann.json", vars(params))
        for old in store.root.glob("ann-*.faiss"):
            old.unlink()
        _record_ann(store, None)
        return vars(params)
    if count == 0 or "pooled_key" not in meta:
        index, params = build_ann(np.zeros((0, 1), np.float32), np.zeros(0, np.int64), threshold=threshold,
                                  memory_budget=memory_budget)
    else:
        with pooled_vectors(store) as (ids, vecs):
            index, params = build_ann(vecs, ids, threshold=threshold, memory_budget=memory_budget)
    save_ann(store.root, index, params, gen)
    _record_ann(store, params.file)
    return vars(params)


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


_SAME_OPTIONS = ("fingerprint", "sample_rate", "window_samples", "hop_samples", STORAGE_DTYPE_KEY)


@dataclass
class _MergePlan:
    """What `merge_indexes` writes: the merged meta, every file once ({path: (part number, its record)}),
    and the windows to copy in their new order ((path, start_sample, end_sample, part number, position in
    the part's window table), sorted)."""

    meta: dict[str, Any]
    files: dict[str, tuple[int, FileRecord]]
    order: list[tuple[str, int, int, int, int]]

    @property
    def file_ids(self) -> dict[str, int]:
        """New file ids 1..F in path order."""
        return {path: n + 1 for n, path in enumerate(sorted(self.files))}


def merge_indexes(out: str | Path, parts: list[str | Path], ann_threshold: int | None = None,
                  root: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Join indexes built with the same model and windows (e.g. `--shard i/N` parts) into a new index.

    Windows are renumbered 1..N in (path, start) order — the ids a single build of the union gives — and
    their arrays copied. Parts must be complete (their ANN current). A path present in two parts must have
    the same bytes (sha256). `out` must not exist; it is written to a temporary folder and renamed.
    """
    out = Path(out)
    if len(parts) < 1:
        raise InputError("merge: give at least one part to merge")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: exists and is not empty; merge into a new folder")
    stores = [Store(p) for p in parts]
    try:
        metas = [s.meta() for s in stores]
        _check_parts(parts, stores, metas)
        files = _union_files(parts, stores)
        tables = [s.window_table() for s in stores]
        plan = _MergePlan(_merged_meta(metas, ann_threshold, root), files, _window_order(stores, tables, files))
        with atomic_dir(out) as tmp:
            dest = Store(tmp, create=True)
            try:
                copy_model(stores[0].model_dir, dest.model_dir)
                dest.record_model()
                reprs = [ReprTable(s, t["chunk"], t["row"], plan.meta.get("repr_spec") or {})
                         for s, t in zip(stores, tables)]
                _write_merged(dest, plan, reprs, progress)
                ann = finalize(dest, plan.meta["ann_threshold"], progress=progress,
                               memory_budget=plan.meta.get("ann_memory_budget"))
                files_ok, windows = dest.count_files("ok"), dest.count_windows()
            finally:
                dest.close()
    finally:
        for s in stores:
            s.close()
    return {"files": files_ok, "windows": windows, "parts": len(parts), "ann": ann, "out": str(out)}


def _check_parts(parts: list[str | Path], stores: list[Store], metas: list[dict[str, Any]]) -> None:
    """Refuse parts built with another model or options, unfinished ones, or differing representations."""
    first = metas[0]
    for p, s, m in zip(parts, stores, metas):
        for key in _SAME_OPTIONS:
            if m.get(key) != first.get(key):
                raise InputError(f"{p}: {key} {m.get(key)!r} differs from {parts[0]}'s {first.get(key)!r}; "
                                 "parts must be built with the same model and options")
        if not ann_is_current(s):
            raise InputError(f"{p}: incomplete index (interrupted `hade index`?); run it again to finish first")
    if len({str(m.get("repr_spec")) for m in metas if m.get("repr_spec")}) > 1:
        raise InputError("parts store different representations; rebuild them with the same model")


def _union_files(parts: list[str | Path], stores: list[Store]) -> dict[str, tuple[int, FileRecord]]:
    """{path: (number of the first part holding it, its record)}; InputError when two parts hold a path
    with different bytes."""
    files: dict[str, tuple[int, FileRecord]] = {}
    for i, s in enumerate(stores):
        for rec in s.files():
            if rec.path not in files:
                files[rec.path] = (i, rec)
            elif files[rec.path][1].sha256 != rec.sha256:
                raise InputError(f"{rec.path} is in {parts[files[rec.path][0]]} and {parts[i]} with different "
                                 "content; re-index one of them")
    return files


def _merged_meta(metas: list[dict[str, Any]], ann_threshold: int | None, root: str | Path | None) -> dict[str, Any]:
    """The merged index's meta: the first part's, with the representations of a part that has any, the
    union's shard (None when the parts cover all N slices of one sharding), root and ANN threshold."""
    first = metas[0]
    spec_meta = next((m for m in metas if m.get("repr_spec")), first)
    meta = {k: v for k, v in first.items() if k not in ("generation", "repr_spec", "pooled_key")}
    meta.update({k: spec_meta[k] for k in ("repr_spec", "pooled_key") if k in spec_meta})
    if ann_threshold is None:
        ann_threshold = first.get("ann_threshold", DEFAULT_THRESHOLD)
    meta.update(root=str(Path(root).resolve()) if root else first["root"],
                shard=_merged_shard([m.get("shard") for m in metas]), ann_threshold=int(ann_threshold))
    return meta


def _merged_shard(shards: list[list[int] | None]) -> list | None:
    """The merged index's shard meta: None when the parts are unsharded or cover all N slices of one
    sharding, else the parts' shards."""
    n_parts = {s[1] for s in shards if s}
    covered = all(shards) and len(n_parts) == 1 and sorted(s[0] for s in shards) == list(range(n_parts.pop()))
    return None if covered or not any(shards) else shards


def _window_order(stores: list[Store], tables: list[dict[str, np.ndarray]],
                  files: dict[str, tuple[int, FileRecord]]) -> list[tuple[str, int, int, int, int]]:
    """The windows to copy, sorted by (path, start_sample, end_sample): each from the part whose record of
    its file is kept, as (path, start_sample, end_sample, part number, position in that part's table)."""
    order = []
    for i, (s, t) in enumerate(zip(stores, tables)):
        paths = {rec.id: rec.path for rec in s.files()}
        for p, (fid, s0, s1) in enumerate(zip(t["file_id"].tolist(), t["start_sample"].tolist(),
                                              t["end_sample"].tolist())):
            if files[paths[fid]][0] == i:
                order.append((paths[fid], s0, s1, i, p))
    order.sort()
    return order


def _write_merged(dest: Store, plan: _MergePlan, reprs: list[ReprTable], progress: bool) -> None:
    """Write the plan's meta and files, then its windows `chunk_rows` at a time (one commit each, a chunk
    per part and codec set among them), numbered 1..N in order. Token codes are copied as they are, with
    the codec sets they need."""
    file_ids = plan.file_ids
    copied = set()
    for table in reprs:
        for codec_id in sorted({c for c in table.chunk_codec.values() if c is not None}):
            dest.copy_codec_set(table.store, codec_id)
            copied.add(codec_id)
    tc = plan.meta.get("token_codec")
    if tc and tc.get("current") not in copied:  # new windows of the merged index get the first set copied
        plan.meta["token_codec"] = {**tc, "current": min(copied) if copied else None}
    with dest.transaction():
        dest.set_meta(**plan.meta)
        for path, (_, rec) in sorted(plan.files.items()):
            dest.add_file(rec._replace(id=file_ids[path]))
        dest.bump_generation()
    sr = plan.meta["sample_rate"]
    bar = tqdm(total=len(plan.order), desc="merge", unit="window", disable=not progress)
    step = chunk_rows(plan.meta.get("repr_spec") or {})
    for a in range(0, len(plan.order), step):
        part = plan.order[a:a + step]
        chunks = _write_merged_chunks(dest, part, reprs)
        with dest.transaction():
            windows = []
            for cid, rows, codec_id, members in chunks:
                dest.register_chunk(cid, rows, codec_id)
                for row, n in enumerate(members):
                    path, s0, s1 = part[n][:3]
                    windows.append(WindowRecord(file_ids[path], s0 / sr, s1 / sr, s0, s1, cid, row, id=a + n + 1))
            dest.put_windows(sorted(windows, key=lambda w: w.id))
            dest.bump_generation()
        bar.update(len(part))
    bar.close()


def _write_merged_chunks(dest: Store, part: list[tuple[str, int, int, int, int]],
                         reprs: list[ReprTable]) -> list[tuple[int, int, str | None, list[int]]]:
    """Write a run of windows of the merge order as chunks, one per (part, codec set) among them; returns
    (chunk id, rows, codec set id, the run's indices of its windows in row order) for each."""
    groups: dict[tuple[int, str | None], list[int]] = {}
    for i, table in enumerate(reprs):
        sel = [n for n, o in enumerate(part) if o[3] == i]
        if not sel:
            continue
        for n, codec_id in zip(sel, table.codec_of(np.array([part[n][4] for n in sel]))):
            groups.setdefault((i, codec_id), []).append(n)
    out = []
    for (i, _), members in groups.items():
        arrays, codec_id = reprs[i].gather_stored(np.array([part[n][4] for n in members]))
        out.append((dest.write_chunk(arrays), len(members), codec_id, members))
    return out
