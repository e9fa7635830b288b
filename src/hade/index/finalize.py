"""End of a build: compact the chunk arrays, (re)build the ANN index; and `hade index merge`.

Compaction rewrites the live rows in window-id order into chunks of `COMPACT_ROWS` rows when the store
has more than `MAX_CHUNKS` chunks (a first build writes one per encoder batch) or more than a quarter
of its rows are dead (deleted or changed files). It changes where rows live, never window ids or values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hade.errors import InputError
from hade.index.ann import DEFAULT_THRESHOLD, AnnParams, build_ann, read_ann_params, save_ann
from hade.index.store import ReprTable, Store, copy_model
from hade.utils.atomic import atomic_dir, write_json_atomic

MAX_CHUNKS = 16
COMPACT_ROWS = 65536
DEAD_FRACTION = 0.25


def _ann_kind(count: int, threshold: int, pooled_key: str | None) -> str:
    if pooled_key is None:
        return "exhaustive"
    return "flat" if count < max(1, threshold) else "ivf"


def ann_is_current(store: Store, params: AnnParams | None = None) -> bool:
    params = params or read_ann_params(store.root)
    return params is not None and params.generation == store.generation and (
        params.kind == "exhaustive" or (store.root / params.file).is_file())


def compact(store: Store, force: bool = False, progress: bool = False) -> bool:
    """Rewrite live rows into few large chunks when fragmented; returns whether it did."""
    meta = store.meta()
    total_rows = store.conn.execute("SELECT COALESCE(SUM(rows), 0), COUNT(*) FROM chunks").fetchone()
    live = store.conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
    fragmented = total_rows[1] > MAX_CHUNKS or (total_rows[0] and live < (1 - DEAD_FRACTION) * total_rows[0])
    if not (force or fragmented) or live == 0 or "repr_spec" not in meta:
        return False
    table = store.window_table()
    reprs = ReprTable(store, table["chunk"], table["row"], meta["repr_spec"])
    new_rows: list[tuple[int, int, int]] = []  # (chunk, row, window id)
    starts = range(0, live, COMPACT_ROWS)
    for a in tqdm(starts, desc="compact", unit="chunk", disable=not progress, leave=False):
        pos = np.arange(a, min(live, a + COMPACT_ROWS))
        cid = store.write_chunk(reprs.gather(pos))
        new_rows.extend((cid, i, int(table["id"][p])) for i, p in enumerate(pos))
    with store.transaction() as c:
        for cid in sorted({r[0] for r in new_rows}):
            store.register_chunk(cid, sum(1 for r in new_rows if r[0] == cid))
        c.executemany("UPDATE windows SET chunk=?, row=? WHERE id=?", new_rows)
    store.cleanup()
    return True


def pooled_vectors(store: Store, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N] int64, pooled embeddings [N, D] float32) of all windows in id order."""
    meta = store.meta()
    table = store.window_table()
    key = meta["pooled_key"]
    dim = meta["repr_spec"][key]["shape"][-1]
    reprs = ReprTable(store, table["chunk"], table["row"], meta["repr_spec"])
    out = np.empty((len(reprs), dim), dtype=np.float32)
    for a in range(0, len(reprs), block):
        pos = np.arange(a, min(len(reprs), a + block))
        out[pos] = reprs.gather(pos, [key])[key].reshape(len(pos), dim)
    return table["id"], out


def finalize(store: Store, threshold: int = DEFAULT_THRESHOLD, progress: bool = False) -> dict[str, Any]:
    """Compact if fragmented and rebuild the ANN when the store changed since it was built (or its kind
    no longer matches `threshold`). Returns the ANN parameters as a dict."""
    meta = store.meta()
    count = store.conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
    kind = _ann_kind(count, threshold, meta.get("pooled_key"))
    params = read_ann_params(store.root)
    if params is not None and ann_is_current(store, params) and params.kind == kind:
        return vars(params)
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
        ids, vecs = np.zeros(0, np.int64), np.zeros((0, 1), np.float32)
    else:
        ids, vecs = pooled_vectors(store)
    index, params = build_ann(vecs, ids, threshold=threshold)
    save_ann(store.root, index, params, gen)
    _record_ann(store, params.file)
    return vars(params)


def _record_ann(store: Store, file: str | None) -> None:
    """Replace the integrity record of the ANN file (None: there is none, exhaustive search)."""
    with store.transaction():
        store.forget_files("ann-")
        if file is not None:
            store.record_files([file])


def merge_indexes(out: str | Path, parts: list[str | Path], ann_threshold: int | None = None,
                  root: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Join indexes built with the same model and windows (e.g. `--shard i/N` parts) into a new index.

    Windows are renumbered 1..N in (path, start) order — the ids a single build of the union gives — and
    their arrays copied. Parts must be complete (their ANN current). A path present in two parts must have
    the same bytes (sha256). `out` must not exist; it is written to a temporary folder and renamed.
    """
    out = Path(out)
    if len(parts) < 1:
        raise InputError("hade index merge: give at least one part")
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: exists and is not empty; merge into a new folder")
    stores = [Store(p) for p in parts]
    try:
        metas = [s.meta() for s in stores]
        first = metas[0]
        for p, s, m in zip(parts, stores, metas):
            for key in ("fingerprint", "sample_rate", "window_samples", "hop_samples", "precision"):
                if m.get(key) != first.get(key):
                    raise InputError(f"{p}: {key} {m.get(key)!r} differs from {parts[0]}'s {first.get(key)!r}; "
                                     "parts must be built with the same model and options")
            if not ann_is_current(s):
                raise InputError(f"{p}: incomplete index (interrupted `hade index`?); run it again to finish first")
        specs = {str(m.get("repr_spec")) for m in metas if m.get("repr_spec")}
        if len(specs) > 1:
            raise InputError("parts store different representations; rebuild them with the same model")
        spec_meta = next((m for m in metas if m.get("repr_spec")), first)
        files: dict[str, tuple[int, tuple]] = {}
        for i, s in enumerate(stores):
            aux = "aux_caption" if "aux_caption" in s.file_columns() else "NULL"
            for row in s.conn.execute("SELECT id, path, size, mtime_ns, sha256, status, error, duration, num_windows, "
                                      f"{aux} FROM files"):
                if row[1] in files:
                    if files[row[1]][1][4] != row[4]:
                        raise InputError(f"{row[1]} is in {parts[files[row[1]][0]]} and {parts[i]} with different "
                                         "content; re-index one of them")
                    continue
                files[row[1]] = (i, row)
        shards = [m.get("shard") for m in metas]
        n_parts = {s[1] for s in shards if s}
        covered = all(shards) and len(n_parts) == 1 and sorted(s[0] for s in shards) == list(range(n_parts.pop()))
        threshold = int(ann_threshold if ann_threshold is not None else first.get("ann_threshold", DEFAULT_THRESHOLD))
        with atomic_dir(out) as tmp:
            dest = Store(tmp, create=True)
            try:
                copy_model(stores[0].model_dir, dest.model_dir)
                dest.record_model()
                tables = [s.window_table() for s in stores]
                reprs = [ReprTable(s, t["chunk"], t["row"], spec_meta.get("repr_spec") or {})
                         for s, t in zip(stores, tables)]
                order = []  # (path, start_sample, end_sample, part, position)
                for i, (s, t) in enumerate(zip(stores, tables)):
                    paths = dict(s.conn.execute("SELECT id, path FROM files"))
                    for p, (fid, s0, s1) in enumerate(zip(t["file_id"].tolist(), t["start_sample"].tolist(),
                                                          t["end_sample"].tolist())):
                        if files[paths[fid]][0] == i:
                            order.append((paths[fid], s0, s1, i, p))
                order.sort()
                file_ids = {path: n + 1 for n, path in enumerate(sorted(files))}
                with dest.transaction() as c:
                    meta = {k: v for k, v in first.items() if k not in ("generation", "repr_spec", "pooled_key")}
                    meta.update(root=str(Path(root).resolve()) if root else first["root"],
                                shard=None if covered else (shards if any(shards) else None), ann_threshold=threshold)
                    for k in ("repr_spec", "pooled_key"):
                        if k in spec_meta:
                            meta[k] = spec_meta[k]
                    dest.set_meta(**meta)
                    c.executemany("INSERT INTO files(id, path, size, mtime_ns, sha256, status, error, duration, "
                                  "num_windows, aux_caption) VALUES(?,?,?,?,?,?,?,?,?,?)",
                                  [(file_ids[p], p, *row[2:]) for p, (_, row) in sorted(files.items())])
                    dest.bump_generation()
                bar = tqdm(total=len(order), desc="merge", unit="window", disable=not progress)
                for a in range(0, len(order), COMPACT_ROWS):
                    part = order[a:a + COMPACT_ROWS]
                    arrays = {k: np.empty((len(part), *v["shape"]), v["dtype"])
                              for k, v in (spec_meta.get("repr_spec") or {}).items()}
                    for i in range(len(stores)):
                        sel = [n for n, o in enumerate(part) if o[3] == i]
                        if sel:
                            got = reprs[i].gather(np.array([part[n][4] for n in sel]))
                            for k in arrays:
                                arrays[k][sel] = got[k]
                    cid = dest.write_chunk(arrays)
                    sr = first["sample_rate"]
                    with dest.transaction() as c:
                        dest.register_chunk(cid, len(part))
                        c.executemany("INSERT INTO windows(id, file_id, start, end, start_sample, end_sample, chunk, "
                                      "row) VALUES(?,?,?,?,?,?,?,?)",
                                      [(a + n + 1, file_ids[o[0]], o[1] / sr, o[2] / sr, o[1], o[2], cid, n)
                                       for n, o in enumerate(part)])
                        dest.bump_generation()
                    bar.update(len(part))
                bar.close()
                ann = finalize(dest, threshold, progress=progress)
                files_ok, windows = dest.conn.execute("SELECT (SELECT COUNT(*) FROM files WHERE status='ok'), "
                                                      "(SELECT COUNT(*) FROM windows)").fetchone()
            finally:
                dest.close()
    finally:
        for s in stores:
            s.close()
    return {"files": files_ok, "windows": windows, "parts": len(parts), "ann": ann, "out": str(out)}
