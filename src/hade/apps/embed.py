"""`hade embed`: texts or audio files to vectors in a .npy or Parquet file (`RetrievalModel.embed_text` /
`embed_audio`, hade.models.embed).

    hade embed --ckpt CKPT --text "a dog barks" --text "rain" --out texts.parquet
    hade embed --ckpt CKPT --texts captions.txt --out texts.npy          # one text per line
    hade embed --ckpt CKPT sounds/ extra.wav --out audio.parquet [--per-window]

Parquet columns: `text`, `vector` for texts; `path`, `start`, `end`, `vector` for audio (one row per file,
start 0 and end its duration; with --per-window one row per window). A .npy file holds the vectors [N, D]
float32 and FILE.csv beside it the other columns, row for row. Folders are searched recursively for the
files `hade index` reads; a file that cannot be decoded is skipped and reported, not fatal.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np

from hade.config import COMPUTE_DTYPES
from hade.data.scan import FileProblem
from hade.errors import InputError
from hade.utils.vectorfile import VECTOR_FORMATS, vector_format, write_vectors

def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade embed` to a sub-parser set."""
    p = sub.add_parser("embed", help="write text or audio embeddings to a .npy or Parquet file",
                       description="Embed texts (--text, --texts) or audio files and folders with a checkpoint's "
                                   "pooled vectors (L2-normalised float32), as `hade index` would for audio.")
    p.add_argument("audio", nargs="*", type=Path, metavar="AUDIO", help="audio files or folders (recursive)")
    p.add_argument("--ckpt", type=Path, required=True, help="checkpoint directory (`hade train` / `hade convert`)")
    p.add_argument("--text", action="append", default=None, help="a text to embed (repeat for more)")
    p.add_argument("--texts", type=Path, default=None, help="a UTF-8 file with one text per line (blank lines skipped)")
    p.add_argument("--out", type=Path, required=True, help="output FILE.parquet or FILE.npy (+ FILE.csv)")
    p.add_argument("--format", choices=VECTOR_FORMATS, default=None, help="default: from --out's suffix")
    p.add_argument("--per-window", action="store_true",
                   help="audio: one vector per window (with start/end seconds) instead of one per file")
    p.add_argument("--window", type=float, default=None, help="window seconds (default: as `hade index`)")
    p.add_argument("--hop", type=float, default=None, help="hop seconds (default: half the window)")
    p.add_argument("--batch-size", type=int, default=16, help="windows per encoder call (texts: 4x as many)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compute", choices=COMPUTE_DTYPES, default="fp32", help="encoder precision (autocast)")
    return p


def read_texts(args: argparse.Namespace) -> list[str]:
    """--text values, then the non-blank lines of --texts."""
    texts = list(args.text or [])
    if args.texts is not None:
        try:
            lines = args.texts.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"--texts {args.texts}: cannot read it as UTF-8 text ({e})") from None
        texts += [line.strip() for line in lines if line.strip()]
        if not texts:
            raise InputError(f"--texts {args.texts}: no texts in it (one per line)")
    return texts


def audio_files(paths: list[Path]) -> tuple[list[Path], list[FileProblem]]:
    """Files (given ones, then each folder's audio files, recursive and sorted) and the paths skipped."""
    from hade.data.scan import scan_audio

    files: list[Path] = []
    skipped: list[FileProblem] = []
    for path in paths:
        if path.is_dir():
            found, links = scan_audio(path)
            files += [p for _, p in found]
            skipped += [FileProblem(str(path / s.path), s.reason) for s in links]
        elif path.exists():
            files.append(path)
        else:
            skipped.append(FileProblem(str(path), "no such file or folder"))
    return files, skipped


def embed_files(model: Any, files: list[Path], args: argparse.Namespace
                ) -> tuple[np.ndarray, dict[str, list], list[FileProblem]]:
    """(vectors [N, D], label columns path/start/end, skipped files) of the readable files: one row per
    window with --per-window, else one per file (its windows pooled, start 0, end its duration)."""
    from hade.models.embed import embed_windows

    skipped: list[FileProblem] = []

    def skip(i: int, err: Exception) -> None:
        skipped.append(FileProblem(str(files[i]), getattr(err, "reason", str(err))))

    win = embed_windows(model, files, batch_size=args.batch_size, window=args.window, hop=args.hop,
                        progress=sys.stderr.isatty(), on_error=skip)
    if args.per_window:
        cols = {"path": [str(files[i]) for i in win.item.tolist()], "start": win.start.tolist(),
                "end": win.end.tolist()}
        return win.vectors, cols, skipped
    kept, row = np.unique(win.item, return_inverse=True)  # the files that had windows, in input order
    ends = np.zeros(len(kept))
    np.maximum.at(ends, row, win.end)  # the last window ends where its file does
    vectors = dataclasses.replace(win, item=row).pooled(len(kept))
    return vectors, {"path": [str(files[i]) for i in kept.tolist()], "start": [0.0] * len(kept),
                     "end": ends.tolist()}, skipped


def _check(args: argparse.Namespace) -> None:
    has_text = bool(args.text) or args.texts is not None
    if has_text == bool(args.audio):
        raise InputError('give texts (--text "..." or --texts FILE) or audio files/folders, not both, e.g. '
                         'hade embed --ckpt CKPT --text "a dog barks" --out vectors.parquet')
    if has_text and (args.per_window or args.window is not None or args.hop is not None):
        raise InputError("--per-window, --window and --hop are for audio; texts get one vector each")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {args.batch_size}")
    vector_format(args.out, args.format)


def run(args: argparse.Namespace) -> int:
    """Embed, write --out, print what was written and (on stderr) what was skipped."""
    _check(args)
    texts = read_texts(args)
    files, skipped = ([], []) if texts else audio_files(args.audio)
    if not texts and not files:
        raise InputError(f"no audio files in {', '.join(map(str, args.audio))}")
    import hade

    model = hade.load(args.ckpt, device=args.device, compute=args.compute)
    if texts:
        vectors = model.embed_text(texts, batch_size=4 * args.batch_size, progress=None)
        cols: dict[str, list] = {"text": texts}
    else:
        vectors, cols, bad = embed_files(model, files, args)
        skipped += bad
    for s in skipped:
        print(f"skipped {s.path}: {s.reason}", file=sys.stderr)
    if not len(vectors):
        raise InputError(f"none of the {len(files)} audio files could be read; nothing written")
    written = write_vectors(args.out, vectors, cols, format=args.format,
                            metadata={"ckpt": str(args.ckpt), "head": model.config.head})
    unit = "text" if texts else "window" if args.per_window else "file"
    print(f"wrote {len(vectors)} vectors ({vectors.shape[1]} dims, one per {unit}) to "
          f"{', '.join(map(str, written))}" + (f"; skipped {len(skipped)} (listed above)" if skipped else ""))
    return 0
