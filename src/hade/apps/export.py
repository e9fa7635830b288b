"""`hade export INDEX --out FILE [--format parquet|npy]`: an index's window vectors for a vector database
of one's own (hade.index.export).

    hade export sounds.idx --out sounds.parquet       # columns id, path, start, end, vector (FLOAT[D])
    hade export sounds.idx --out sounds.npy           # vectors [N, D] float32 + sounds.csv (id, path, start, end)

The vector is the pooled one the index's ANN recalls with (float32); paths are relative to the indexed
folder. For a DP index, the dot product with `model.embed_text(query)` ranks as `hade search` does.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hade.utils.vectorfile import VECTOR_FORMATS, vector_format


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade export` to a sub-parser set."""
    p = sub.add_parser("export", help="write an index's window vectors to Parquet or .npy",
                       description="Export the pooled window vectors of an index with each window's id, file "
                                   "path and start/end seconds (Parquet, or .npy with a CSV beside it).")
    p.add_argument("index", type=Path, help="index folder written by `hade index`")
    p.add_argument("--out", type=Path, required=True, help="FILE.parquet or FILE.npy (+ FILE.csv)")
    p.add_argument("--format", choices=VECTOR_FORMATS, default=None, help="default: from --out's suffix")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    """Export and print what was written."""
    vector_format(args.out, args.format)
    from hade.index.export import export_index

    summary = export_index(args.index, args.out, format=args.format)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(f"wrote {summary.windows} window vectors ({summary.dim} dims, key {summary.key!r}) to "
              f"{', '.join(str(p) for p in summary.files)}")
    return 0
