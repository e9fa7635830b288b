#!/usr/bin/env python3
"""`hade onnx` on a full-size model: export time, file sizes, ONNX Runtime's difference to hade's vectors
and the time per batch of each (one thread unless --threads).

    python benchmarks/onnx_export.py                          # dp, htsat-tiny + MiniLM (the README's figures)
    python benchmarks/onnx_export.py --audio-encoder htsat-cpu --head tha+dcr --threads 2

The model is built, not trained (seeded random audio encoder and head, MiniLM's released text weights): the
export and the differences do not depend on training. Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import hade
from hade.config import ModelConfig
from hade.models.onnx_export import check_export, export_onnx, onnx_session, run_audio, run_text

CAPTIONS = ["a dog barks twice", "rain falls on a tin roof while thunder rumbles far away",
            "a car passes by on a wet road", "birds chirp in the morning"]


def _best_of(fn, repeats: int) -> float:
    """Fastest of `repeats` calls, milliseconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio-encoder", default="htsat-tiny")
    parser.add_argument("--head", default="dp")
    parser.add_argument("--embed-dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4, help="windows and captions per check and timing")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = hade.create_model(ModelConfig(audio_encoder=args.audio_encoder, head=args.head,
                                          embed_dim=args.embed_dim)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        export = export_onnx(model, Path(tmp) / "onnx")
        seconds = time.perf_counter() - start
        mb = {p.name: p.stat().st_size / 2**20 for p in (export.audio_path, export.text_path)}
        check = check_export(model, export, audio_batch=args.batch, captions=CAPTIONS[:args.batch])
        print(f"{args.head} {args.audio_encoder} D={export.embed_dim}: window {export.window_samples} samples at "
              f"{export.sample_rate} Hz; export {seconds:.0f} s; audio.onnx {mb['audio.onnx']:.0f} MB, "
              f"text.onnx {mb['text.onnx']:.0f} MB")
        print(f"max |ONNX Runtime - hade|: audio {check.audio_max_abs_diff:.1e} ({args.batch} random windows), "
              f"text {check.text_max_abs_diff:.1e} ({args.batch} captions)")
        waves = (0.1 * np.random.default_rng(1).standard_normal((args.batch, export.window_samples))).astype(np.float32)
        ids, mask = model.tokenize(CAPTIONS[:args.batch])
        audio, text = onnx_session(export.audio_path, args.threads), onnx_session(export.text_path, args.threads)
        rows = {
            "audio": (lambda: run_audio(audio, waves),
                      lambda: model.embed_audio(waves, sample_rate=export.sample_rate, per_window=True,
                                                batch_size=args.batch)),
            "text": (lambda: run_text(text, ids.numpy(), mask.numpy()),
                     lambda: model.embed_text(CAPTIONS[:args.batch], batch_size=args.batch)),
        }
        for tower, (ort_fn, torch_fn) in rows.items():
            print(f"{tower} batch of {args.batch}, {args.threads} thread(s): ONNX Runtime "
                  f"{_best_of(ort_fn, args.repeats):.0f} ms, hade (PyTorch) {_best_of(torch_fn, args.repeats):.0f} ms")


if __name__ == "__main__":
    main()
