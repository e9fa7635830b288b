#!/usr/bin/env python3
"""Cost of the streaming training input (hade.data.loader), apart from the model.

    .venv/bin/python benchmarks/data.py [--clips 96] [--seconds 10] [--source-rate 44100] [--rate 32000]
                                        [--formats wav,flac,ogg] [--workers 0,1,2] [--batch 16]
                                        [--train-steps 6] [--json]

On generated clips (noise with tones, `--seconds` long at `--source-rate`, written as WAV PCM-16, FLAC and
OGG Vorbis) it measures:
1. the per-clip cost of decoding and of resampling to `--rate` (median over the clips, one process);
2. clips/s of the input pipeline alone (decode, resample, crop, collate) with 0, 1 and 2 DataLoader
   workers, cache off, one epoch after a warm-up batch;
3. the share of a CPU training step spent waiting for data with 2 workers (the demo's htsat-cpu audio
   encoder on 4 s clips at 16 kHz and a 2-block text encoder with random weights, batch `--batch`, the
   last format's clips): time blocked in `next(loader)` over the whole loop time;
4. the workers a GPU would need, as a formula from the measured per-clip cost c (seconds of one core):
   a rank running S steps/s on a local batch of b clips consumes S·b clips/s, and one worker supplies
   1/c clips/s, so workers >= ceil(S · b · c) (plus one to absorb jitter).

Packed shards (issue 11, item 2) will be another entry of SOURCES: a function that writes the clips in
that format and returns a map-style dataset with the TrainPairs contract ((epoch, pair) -> item); the
rest of this script measures it unchanged.

Measured figures and the machine they came from belong in the report that quotes them; they depend on the
machine's load (several processes on 2 cores make worker counts above 1 compete with the training step).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import soxr
import torch

from hade.data.audio import load_audio
from hade.data.dataset import ClipAudioStore, TrainPairs
from hade.data.loader import StepBatchSampler, train_loader
from hade.data.types import Clip, SplitData

SUBTYPES = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS")}


def write_clips(folder: Path, fmt: str, clips: int, seconds: float, rate: int) -> SplitData:
    """`clips` noisy tone clips in format `fmt`, one caption each."""
    container, subtype = SUBTYPES[fmt]
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    out = []
    for i in range(clips):
        wave = 0.05 * rng.standard_normal(t.shape[0]) + 0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t)
        path = folder / f"clip{i:05d}.{fmt}"
        sf.write(str(path), wave.astype(np.float32), rate, format=container, subtype=subtype)
        out.append(Clip(f"clip{i}", path, (f"caption of clip {i}",)))
    return SplitData(f"bench-{fmt}", out)


def raw_pairs(split: SplitData, rate: int, clip_samples: int) -> TrainPairs:
    return TrainPairs(ClipAudioStore(split, rate, max_cache_bytes=0), clip_samples, seed=0, replace_bad=True)


SOURCES: dict[str, Callable[[SplitData, int, int], TrainPairs]] = {"raw": raw_pairs}  # "packed": item 2


def per_clip_cost(split: SplitData, rate: int) -> dict[str, float]:
    """Median milliseconds per clip: decoding alone, resampling alone, and load_audio (both)."""
    decode, resample, total = [], [], []
    for clip in split.clips:
        t0 = time.perf_counter()
        data, sr = sf.read(str(clip.audio_path), dtype="float32")
        t1 = time.perf_counter()
        if sr != rate:
            soxr.resample(data, sr, rate, quality="HQ")
        t2 = time.perf_counter()
        load_audio(clip.audio_path, rate)
        t3 = time.perf_counter()
        decode.append(t1 - t0), resample.append(t2 - t1), total.append(t3 - t2)
    ms = lambda xs: round(1000 * statistics.median(xs), 3)  # noqa: E731
    return {"decode_ms": ms(decode), "resample_ms": ms(resample), "decode_resample_ms": ms(total)}


def loader_throughput(pairs: TrainPairs, workers: int, batch: int) -> float:
    """Clips/s of one epoch through the DataLoader (after a warm-up batch that starts the workers)."""
    sampler = StepBatchSampler(pairs.pair_clip_index, batch, seed=0)
    loader = train_loader(pairs, sampler, workers, seed=0)
    it = iter(loader)
    next(it)
    start, clips = time.perf_counter(), 0
    for b in it:
        clips += b["audio"].shape[0]
    return clips / (time.perf_counter() - start)


def wait_share(split: SplitData, workers: int, batch: int, steps: int) -> dict[str, float]:
    """Share of the training loop spent blocked on the loader while the demo's CPU model (htsat-cpu, 4 s
    clips; a 2-block text encoder with random weights) takes real optimizer steps."""
    from hade.config import ModelConfig
    from hade.eval.evaluate import clip_samples
    from hade.models.factory import create_model
    from hade.train.trainer import training_loss

    torch.manual_seed(0)
    model = create_model(ModelConfig(audio_encoder="htsat-cpu", text_pretrained=False,
                                     text_overrides={"num_hidden_layers": 2}))
    pairs = SOURCES["raw"](split, model.sample_rate, clip_samples(model, 4.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sampler = StepBatchSampler(pairs.pair_clip_index, batch, seed=0)
    it = iter(train_loader(pairs, sampler, workers, seed=0))
    next(it)  # workers started, first batches prefetched
    waited = stepped = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        b = next(it, None)
        t1 = time.perf_counter()
        if b is None:
            break
        optimizer.zero_grad()
        training_loss(model, b, 0.07)["loss"].backward()
        optimizer.step()
        waited, stepped = waited + t1 - t0, stepped + time.perf_counter() - t1
    return {"wait_share": round(waited / max(waited + stepped, 1e-9), 4), "step_s": round(stepped / steps, 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--source-rate", type=int, default=44100)
    ap.add_argument("--rate", type=int, default=32000)
    ap.add_argument("--formats", default="wav,flac,ogg")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    clip_samples = int(round(args.seconds * args.rate))
    report: dict = {"clips": args.clips, "seconds": args.seconds, "source_rate": args.source_rate, "rate": args.rate,
                    "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            folder = Path(tmp) / fmt
            folder.mkdir()
            split = write_clips(folder, fmt, args.clips, args.seconds, args.source_rate)
            pairs = SOURCES["raw"](split, args.rate, clip_samples)
            row = per_clip_cost(split, args.rate)
            row["clips_per_s"] = {w: round(loader_throughput(pairs, int(w), args.batch), 1)
                                  for w in args.workers.split(",")}
            report["formats"][fmt] = row
        report["train_wait_2_workers"] = wait_share(split, 2, args.batch, args.train_steps)  # last format's clips
    c = max(r["decode_resample_ms"] for r in report["formats"].values()) / 1000
    report["workers_needed"] = (f"workers >= ceil(S * b * c) + 1 with c = {c:.4f} s per clip: e.g. S=4 steps/s, "
                                f"b=128 clips per rank -> {math.ceil(4 * 128 * c) + 1}")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for fmt, row in report["formats"].items():
        print(f"{fmt:5s} decode {row['decode_ms']:7.2f} ms  resample {row['resample_ms']:7.2f} ms  "
              f"load_audio {row['decode_resample_ms']:7.2f} ms/clip   clips/s by workers {row['clips_per_s']}")
    w = report["train_wait_2_workers"]
    print(f"CPU training step {w['step_s']:.3f} s; share waiting for data with 2 workers: {100 * w['wait_share']:.1f} %")
    print(report["workers_needed"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
