"""`hade index merge`: join indexes built with the same model and windows (e.g. `--shard i/N` parts) into one.

Windows are renumbered 1..N in (path, start) order — the ids a single build of the union gives — and their
arrays copied (token codes as they are, with the codec sets they need); the merged index is then finished
like a build (`hade.index.finalize`). It is written into a temporary folder and renamed into place; with
`replace`, an index already at the destination (an earlier parallel run's) is swapped out under its write
lock, with two renames (a crash between them leaves it in ``.OUT.old``).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hade.errors import InputError
from hade.index.ann import DEFAULT_THRESHOLD, AnnParams
from hade.index.compression import TokenCompression
from hade.index.finalize import ann_is_current, chunk_rows, finalize
from hade.index.meta import IndexMeta
from hade.index.reprs import ReprTable
from hade.index.store import FileRecord, Store, WindowRecord, copy_model, write_lock
from hade.utils.atomic import atomic_dir

# what parts must share: the model and the windows, and how they are stored
_SAME_OPTIONS = ("fingerprint", "sample_rate", "window_samples", "hop_samples", "storage_dtype")


@dataclass
class _MergePlan:
    """What `merge_indexes` writes: the merged meta, every file once ({path: (part number, its record)}),
    and the windows to copy in their new order ((path, start_sample, end_sample, part number, position in
    the part's window table), sorted)."""

    meta: IndexMeta
    files: dict[str, tuple[int, FileRecord]]
    order: list[tuple[str, int, int, int, int]]

    @property
    def file_ids(self) -> dict[str, int]:
        """New file ids 1..F in path order."""
        return {path: n + 1 for n, path in enumerate(sorted(self.files))}


@dataclass(frozen=True)
class MergeReport:
    """What `merge_indexes` made: `files` readable files and `windows` windows in `out`, joined from
    `parts` parts, with the ANN's parameters after finishing (`ann`)."""

    out: str
    files: int
    windows: int
    parts: int
    ann: AnnParams

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `hade index merge --json` prints."""
        return {"files": self.files, "windows": self.windows, "parts": self.parts, "ann": asdict(self.ann),
                "out": self.out}


def merge_indexes(out: str | Path, parts: list[str | Path], ann_threshold: int | None = None,
                  root: str | Path | None = None, progress: bool = True, replace: bool = False) -> MergeReport:
    """Join indexes built with the same model and windows into the index `out`.

    Parts must be complete (their ANN current). A path present in two parts must have the same bytes
    (sha256). `out` must be missing or empty, unless `replace`: then what is there (an index the caller
    has claimed, e.g. an earlier run's) is replaced by the merge, swapped in under its write lock.
    """
    out = Path(out)
    if len(parts) < 1:
        raise InputError("merge: give at least one part to merge")
    if not (out.exists() and any(out.iterdir())):
        return _merge_into(out, parts, ann_threshold, root, progress)
    if not replace:
        raise InputError(f"{out}: exists and is not empty; merge into a new folder")
    staging, old = out.with_name(f".{out.name}.merging"), out.with_name(f".{out.name}.old")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        report = _merge_into(staging, parts, ann_threshold, root, progress)
        with write_lock(out):
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a failed merge, or a writer holding the lock
    shutil.rmtree(old, ignore_errors=True)
    return dataclasses.replace(report, out=str(out))


def _merge_into(out: Path, parts: list[str | Path], ann_threshold: int | None, root: str | Path | None,
                progress: bool) -> MergeReport:
    """The merge into `out`, a missing or empty folder: written in a temporary folder and renamed."""
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
                reprs = [ReprTable(s, t["chunk"], t["row"], plan.meta.repr_spec or {})
                         for s, t in zip(stores, tables)]
                _write_merged(dest, plan, reprs, progress)
                ann = finalize(dest, plan.meta.ann_threshold, progress=progress,
                               memory_budget=plan.meta.ann_memory_budget)
                files_ok, windows = dest.count_files("ok"), dest.count_windows()
            finally:
                dest.close()
    finally:
        for s in stores:
            s.close()
    return MergeReport(out=str(out), files=files_ok, windows=windows, parts=len(parts), ann=ann)


def _check_parts(parts: list[str | Path], stores: list[Store], metas: list[IndexMeta]) -> None:
    """Refuse parts built with another model or options, unfinished ones, or differing representations."""
    first = metas[0]
    for p, s, m in zip(parts, stores, metas):
        for key in _SAME_OPTIONS:
            if getattr(m, key) != getattr(first, key):
                raise InputError(f"{p}: {key} {getattr(m, key)!r} differs from {parts[0]}'s "
                                 f"{getattr(first, key)!r}; parts must be built with the same model and options")
        if not ann_is_current(s):
            raise InputError(f"{p}: incomplete index (interrupted `hade index`?); run it again to finish first")
    if len({str(m.repr_spec) for m in metas if m.repr_spec}) > 1:
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


def _merged_meta(metas: list[IndexMeta], ann_threshold: int | None, root: str | Path | None) -> IndexMeta:
    """The merged index's meta: the first part's, with the representations of a part that has any, the
    union's shard (None when the parts cover all N slices of one sharding), root and ANN threshold."""
    first = metas[0]
    spec_meta = next((m for m in metas if m.repr_spec), first)
    if ann_threshold is None:
        ann_threshold = first.ann_threshold if first.ann_threshold is not None else DEFAULT_THRESHOLD
    return first.replace(generation=0, repr_spec=spec_meta.repr_spec, pooled_key=spec_meta.pooled_key,
                         root=str(Path(root).resolve()) if root else first.root,
                         shard=_merged_shard([m.shard for m in metas]), ann_threshold=int(ann_threshold))


def _merged_shard(shards: list[Any]) -> tuple | None:
    """The merged index's shard: None when the parts are unsharded or cover all N slices of one sharding,
    else the parts' shards (such an index is not updated as one shard)."""
    n_parts = {s[1] for s in shards if s}
    covered = all(shards) and len(n_parts) == 1 and sorted(s[0] for s in shards) == list(range(n_parts.pop()))
    return None if covered or not any(shards) else tuple(shards)


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
    plan.meta = plan.meta.replace(token_codec=TokenCompression.merged(plan.meta, copied))
    with dest.transaction():
        dest.write_meta(plan.meta)
        for path, (_, rec) in sorted(plan.files.items()):
            dest.add_file(rec._replace(id=file_ids[path]))
        dest.bump_generation()
    bar = tqdm(total=len(plan.order), desc="merge", unit="window", disable=not progress)
    step = chunk_rows(plan.meta.repr_spec or {})
    for a in range(0, len(plan.order), step):
        _commit_merged_windows(dest, plan, reprs, a, plan.order[a:a + step])
        bar.update(min(step, len(plan.order) - a))
    bar.close()


def _commit_merged_windows(dest: Store, plan: _MergePlan, reprs: list[ReprTable], first: int,
                           part: list[tuple[str, int, int, int, int]]) -> None:
    """Write and commit one run of the merge order (its windows numbered from `first` + 1)."""
    sr, file_ids = plan.meta.sample_rate, plan.file_ids
    chunks = _write_merged_chunks(dest, part, reprs)
    with dest.transaction():
        windows = []
        for cid, rows, codec_id, members in chunks:
            dest.register_chunk(cid, rows, codec_id)
            for row, n in enumerate(members):
                path, s0, s1 = part[n][:3]
                windows.append(WindowRecord(file_ids[path], s0 / sr, s1 / sr, s0, s1, cid, row, id=first + n + 1))
        dest.put_windows(sorted(windows, key=lambda w: w.id))
        dest.bump_generation()


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
