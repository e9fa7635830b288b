"""`hade onnx CKPT --out DIR`: both towers of a checkpoint as ONNX graphs, for inference without PyTorch
(hade.models.onnx_export).

    hade onnx runs/dp --out dp-onnx               # audio.onnx, text.onnx, tokenizer/, onnx.json; then --check
    hade onnx runs/dp --out dp-onnx --no-check --force --opset 18

audio.onnx takes `waveform` [batch, window] float32 at the model's sample rate, text.onnx `input_ids` and
`attention_mask` [batch, tokens] int64; both return `embedding` [batch, D], the L2-normalised pooled vector
hade indexes and searches with. --check (default) runs ONNX Runtime on random waveforms and two captions
and prints the largest difference to hade's own vectors for each tower.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade onnx` to a sub-parser set."""
    p = sub.add_parser("onnx", help="export a checkpoint's audio and text towers to ONNX",
                       description="Write audio.onnx and text.onnx (pooled, L2-normalised embeddings), the "
                                   "tokenizer files and onnx.json (pre-processing, inputs and outputs) into a "
                                   "folder, and check them against hade with ONNX Runtime.")
    p.add_argument("ckpt", type=Path, help="checkpoint directory (`hade train` / `hade convert`)")
    p.add_argument("--out", type=Path, required=True, help="folder to write (must be new or empty)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18, the lowest the exporter writes)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="compare ONNX Runtime's embeddings with hade's (default: on)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--json", action="store_true", help="print what was written (and the check) as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    """Export, optionally check, and print what was written."""
    import hade
    from hade.models.onnx_export import (DEFAULT_OPSET, EXPORT_PACKAGES, check_export, check_opset, check_out_dir,
                                         export_onnx, require_packages)

    opset = check_opset(DEFAULT_OPSET if args.opset is None else args.opset)
    check_out_dir(args.out, args.force)  # before loading the model: a mistake costs no time
    require_packages(EXPORT_PACKAGES + (("onnxruntime",) if args.check else ()))
    model = hade.load(args.ckpt)
    export = export_onnx(model, args.out, opset=opset, force=args.force)
    check = check_export(model, export) if args.check else None
    if args.json:
        summary = {"out": str(export.out_dir), **export.metadata(), "check": asdict(check) if check else None}
        print(json.dumps(summary, indent=2))
        return 0
    print(f"wrote {export.audio.file} (waveform [batch, {export.window_samples}] at {export.sample_rate} Hz), "
          f"{export.text.file} (input_ids, attention_mask [batch, tokens]) -> embedding [batch, "
          f"{export.embed_dim}], {export.tokenizer}/ and onnx.json to {export.out_dir} (opset {export.opset})")
    if not export.exact_scores:
        print(f"note: head {export.head!r} is not one dot product: the embeddings are its recall vectors (what "
              "an index's ANN searches), not its full score, which needs hade")
    for graph in (export.audio, export.text):
        if graph.weights_file:
            print(f"{graph.file} keeps its weights in {graph.weights_file} beside it: move the folder whole")
    if check is not None:
        print(f"check (ONNX Runtime vs hade, max abs difference): audio {check.audio_max_abs_diff:.2e} "
              f"({check.audio_batch} random windows), text {check.text_max_abs_diff:.2e} ({check.texts} captions)")
    return 0
