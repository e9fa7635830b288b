#!/usr/bin/env python3
"""A small index builds at the speed of its encoder: indexing a small folder with a THA model, with the token
codec deferred until the index has enough tokens (now) and fitted at once (before), side by side; and the
bytes a window of the default codec at 10k windows.

1. **Time.** A folder of `--files` SynthCaps clips of `--seconds` s (32 kHz) and a THA model with random
   weights of a converted CLAP model's shapes (HTSAT-tiny, 512-dim tokens: 1024 + 256 + 64 a 10 s window;
   the default codec is then OPQ64,IVF256,PQ64), indexed into fresh indexes on `--threads` torch and faiss
   threads, each timed as `build_index` end to end (model load, decoding, encoding, codec, ANN; the model is
   loaded once before, untimed, so that the first run does not pay for imports and a cold page cache):
   * ``after``: as `hade index` runs now: float16 tokens until the index has enough to fit its codec;
   * ``none``: ``--token-codec none``, the encoder alone, for reference;
   * ``before``: ``token_codec_min_tokens=0``: the codec fitted on whatever the folder holds, as `hade
     index` did before (OPQ's 50 rounds of PQ training on a few thousand tokens a level).
   Printed: windows, seconds, bytes a window as stored (`Index.info`), the codec fitted, and the faiss
   ``WARNING clustering`` lines the build wrote to stderr (file descriptor 2, counted).
2. **Size.** The ``before`` index (the default codec fitted on the folder's own windows) grown to
   `--size-windows` windows by appending copies of its windows' codes through the store API (as
   benchmarks/index_scale.py grows an index; the windows are the random model's encodings of SynthCaps
   clips, copied, so the figure is of the codec's layout, not of its accuracy), then finalised. Printed: the
   bytes a window of its arrays (`Index.info`) and of the index on disk (arrays, codecs, database, ANN; not
   the model copy), against float16.

    python benchmarks/small_index.py --out runs/small_index --threads 1
    python benchmarks/small_index.py --out runs/small_index --threads 2 --runs after,none --size-windows 0

Nothing is asserted; a JSON summary goes to OUT/small_index.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hade.index import Index, build_index  # noqa: E402
from hade.index.finalize import finalize  # noqa: E402
from hade.index.reprs import ReprTable  # noqa: E402
from hade.index.store import MODEL_DIR, Store, WindowRecord  # noqa: E402

TINY_TEXT = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}


def make_model(path: Path, audio_encoder: str, embed_dim: int) -> Path:
    """A THA checkpoint with random weights (the text side tiny: indexing never runs it)."""
    if (path / "config.json").is_file():
        return path
    import hade
    import torch
    from hade.checkpoint import save_model
    from hade.config import ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(audio_encoder=audio_encoder, text_encoder="minilm", text_pretrained=False,
                      text_overrides=TINY_TEXT, head="tha", embed_dim=embed_dim)
    save_model(hade.create_model(cfg), path)
    return path


def make_folder(path: Path, files: int, seconds: float, sample_rate: int) -> Path:
    from hade.data.synthcaps import generate

    generate(path, clips=files, sample_rate=sample_rate, duration=seconds, progress=False)
    return path


@contextlib.contextmanager
def stderr_lines() -> Iterator[list[str]]:
    """Capture what is written to file descriptor 2 (faiss's C++ warnings included) into the yielded list."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        lines: list[str] = []
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode(errors="replace").splitlines())


def timed_build(name: str, folder: Path, out: Path, model: Path, **options) -> dict:
    """Index `folder` into a fresh `out`; seconds, windows, bytes a window, codec, faiss warnings."""
    shutil.rmtree(out, ignore_errors=True)
    with stderr_lines() as err:
        t = time.perf_counter()
        stats = build_index(folder, out, model, progress=False, **options)
        seconds = time.perf_counter() - t
    with Index.open(out) as index:
        info = index.info()
    current = info.token_codec.current
    folder_ = out / "codecs" / str(current)
    factories = [json.loads((folder_ / f"{key}.json").read_text())["factory"]
                 for key in json.loads((folder_ / "codecs.json").read_text())["keys"]] if current else []
    row = {"run": name, "files": stats.files, "windows": stats.windows, "seconds": round(seconds, 1),
           "bytes_per_window": info.bytes_per_window, "codec": " | ".join(factories) or "float16 tokens",
           "faiss_warnings": sum("WARNING clustering" in line for line in err), "notes": stats.notes}
    print(f"{name:7s} {row['windows']:4d} windows  {row['seconds']:7.1f} s  {row['bytes_per_window']:9,d} B/window  "
          f"{row['faiss_warnings']:5d} faiss warnings  codec: {row['codec']}", flush=True)
    return row


def grow_codes(src: Path, dest: Path, windows: int, block: int = 1000) -> dict:
    """Copy index `src` to `dest` and append copies of its windows (files ``copyN/…``, arrays copied as
    stored: codes stay codes) in chunks of `block` windows until it has `windows`; then finalise."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest)
    store = Store(dest)
    try:
        meta = store.meta()
        table = store.window_table()
        reprs = ReprTable(store, table["chunk"], table["row"], meta.repr_spec)
        base = {f.id: f for f in store.files("ok")}
        n0 = len(reprs)
        arrays, codec_id = reprs.gather_stored(np.arange(n0))
        copies = -(-block // n0)
        tiled = {k: np.concatenate([v] * copies) for k, v in arrays.items()}
        copy = 0
        while (have := store.count_windows()) < windows:
            take = min(copies * n0, windows - have)
            cid = store.write_chunk({k: v[:take] for k, v in tiled.items()})
            with store.transaction():
                store.register_chunk(cid, take, codec_id)
                recs = []
                for i in range(take):
                    if i % n0 == 0:
                        copy += 1
                        ids = {fid: store.add_file(rec._replace(id=None, path=f"copy{copy}/{rec.path}"))
                               for fid, rec in base.items()}
                    p = i % n0
                    recs.append(WindowRecord(ids[int(table["file_id"][p])], float(table["start"][p]),
                                             float(table["end"][p]), int(table["start_sample"][p]),
                                             int(table["end_sample"][p]), cid, i))
                store.put_windows(recs)
                store.bump_generation()
        finalize(store, meta.ann_threshold or 50_000)
        count = store.count_windows()
    finally:
        store.close()
    return {"windows": count, "codec_set": codec_id}


def disk_bytes(index_dir: Path) -> int:
    """Bytes of an index folder's files, without the model copy."""
    return sum(p.stat().st_size for p in index_dir.rglob("*")
               if p.is_file() and MODEL_DIR not in p.relative_to(index_dir).parts)


def size_at(before: Path, dest: Path, windows: int, float_bytes: int) -> dict:
    grown = grow_codes(before, dest, windows)
    with Index.open(dest) as index:
        arrays = index.info().bytes_per_window
    on_disk = disk_bytes(dest)
    codecs = sum(p.stat().st_size for p in (dest / "codecs").rglob("*") if p.is_file())
    row = {**grown, "bytes_per_window_arrays": arrays, "bytes_per_window_on_disk": round(on_disk / grown["windows"]),
           "codec_bytes": codecs, "float16_bytes_per_window": float_bytes, "smaller": round(float_bytes / arrays, 1)}
    print(f"size    {row['windows']:,d} windows: {arrays:,d} B/window of arrays, {row['bytes_per_window_on_disk']:,d} "
          f"B/window on disk (of which codecs {codecs / row['windows']:,.0f}: {codecs:,d} B; database and ANN "
          f"included, no model copy); float16 {float_bytes:,d} B/window of arrays ({row['smaller']}x)", flush=True)
    shutil.rmtree(dest)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/small_index"))
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each clip (10 s: one window)")
    ap.add_argument("--audio-encoder", default="htsat-tiny")
    ap.add_argument("--embed-dim", type=int, default=512, help="THA's token width (a converted CLAP model: 512)")
    ap.add_argument("--threads", type=int, default=2, help="torch and faiss threads")
    ap.add_argument("--runs", default="after,none,before", help="which builds, in order")
    ap.add_argument("--size-windows", type=int, default=10_000, help="0: skip the size part (needs 'before')")
    args = ap.parse_args()

    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    model = make_model(args.out / f"tha-{args.audio_encoder}-{args.embed_dim}", args.audio_encoder, args.embed_dim)
    from hade.checkpoint import read_model_config
    from hade.models.factory import audio_config

    folder = args.out / f"data-{args.files}x{args.seconds:g}s"
    make_folder(folder, args.files, args.seconds, audio_config(read_model_config(model)).sample_rate)
    print(f"{args.files} files of {args.seconds:g} s, THA on {args.audio_encoder} with {args.embed_dim}-dim tokens, "
          f"{args.threads} thread(s)", flush=True)
    from hade.checkpoint import load

    load(model)  # warm-up, not timed: imports, the page cache of the weights (else the first run pays them)
    options = {"after": {}, "none": {"token_codec": "none"}, "before": {"token_codec_min_tokens": 0}}
    rows = [timed_build(name, folder, args.out / f"{name}.idx", model, **options[name])
            for name in args.runs.split(",")]
    summary: dict = {"files": args.files, "seconds_each": args.seconds, "audio_encoder": args.audio_encoder,
                     "embed_dim": args.embed_dim, "threads": args.threads, "runs": rows}
    by_name = {r["run"]: r for r in rows}
    if args.size_windows and "before" in by_name:
        float_bytes = by_name.get("none", by_name.get("after"))["bytes_per_window"]
        summary["size"] = size_at(args.out / "before.idx", args.out / "size.idx", args.size_windows, float_bytes)
    (args.out / "small_index.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
