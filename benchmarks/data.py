#!/usr/bin/env python3
"""Cost of the streaming training input (hade.data.loader), apart from the model: source files vs packed sets.

    .venv/bin/python benchmarks/data.py [--clips 96] [--seconds 10] [--source-rate 44100] [--rate 32000]
                                        [--formats wav,flac,ogg,m4a] [--workers 0,1,2] [--batch 16]
                                        [--train-steps 6] [--json]

On generated clips (noise with tones, `--seconds` long at `--source-rate`, written as WAV PCM-16, FLAC,
OGG Vorbis and, with `--formats ...,m4a`, AAC in MP4 through FFmpeg) it measures, side by side in one run:
1. the per-clip cost of decoding and of resampling to `--rate` (median over the clips, one process);
2. the two packed formats `hade pack` could write, made from the WAV clips at `--rate` (packing time too):
   `packed` = memory-mapped int16 with an offsets table (what hade.data.packed writes), and the WebDataset
   layout (tar shards) with each clip as `tar-flac` (FLAC PCM-16, LAION-CLAP's way) or `tar-npy` (raw int16),
   read at random through a member table; their per-clip read cost, the same way;
3. clips/s of the input pipeline alone (read, resample, crop, collate) with 0, 1 and 2 DataLoader
   workers, cache off, one epoch after a warm-up batch, for every source and packed format, and each
   one's ratio to WAV at the same workers;
4. the share of a CPU training step spent waiting for data with 2 workers (the demo's htsat-cpu audio
   encoder on 4 s clips at 16 kHz and a 2-block text encoder with random weights, batch `--batch`, the
   last format's clips): time blocked in `next(loader)` over the whole loop time;
5. the workers a GPU would need, as a formula from the measured per-clip cost c (seconds of one core):
   a rank running S steps/s on a local batch of b clips consumes S·b clips/s, and one worker supplies
   1/c clips/s, so workers >= ceil(S · b · c) (plus one to absorb jitter); for the slowest source
   format and for packed shards.

Measured figures and the machine they came from belong in the report that quotes them; they depend on the
machine's load (several processes on 2 cores make worker counts above 1 compete with the training step).
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import soxr
import torch

from hade.config import seconds_to_samples
from hade.data import av_audio
from hade.data.audio import load_audio
from hade.data.dataset import ClipAudioStore, TrainPairs
from hade.data.loader import StepBatchSampler, train_loader
from hade.data.packed.shards import FULL_SCALE, encode_clip
from hade.data.packed.writer import pack
from hade.data.readers import read_split
from hade.data.types import Clip, SplitData

SUBTYPES = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
            "m4a": ("M4A", "AAC")}  # m4a: written and read by FFmpeg through PyAV (hade.data.av_audio)
PACKED = ("packed", "tar-flac", "tar-npy")


def write_clips(folder: Path, fmt: str, clips: int, seconds: float, rate: int) -> SplitData:
    """`clips` noisy tone clips in format `fmt`, one caption each (and a manifest, so `hade pack` reads them)."""
    container, subtype = SUBTYPES[fmt]
    rng = np.random.default_rng(0)
    t = np.arange(seconds_to_samples(seconds, rate)) / rate
    out = []
    for i in range(clips):
        wave = 0.05 * rng.standard_normal(t.shape[0]) + 0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t)
        path = folder / f"clip{i:05d}.{fmt}"
        if fmt == "m4a":
            av_audio.encode(path, wave.astype(np.float32), rate, "m4a")
        else:
            sf.write(str(path), wave.astype(np.float32), rate, format=container, subtype=subtype)
        out.append(Clip(f"clip{i}", path, (f"caption of clip {i}",)))
    (folder / "train.jsonl").write_text("".join(json.dumps({"id": c.clip_id, "audio": c.audio_path.name,
                                                            "captions": list(c.captions)}) + "\n" for c in out))
    return SplitData(f"bench-{fmt}", out)


class TarStore:
    """A ClipAudioStore look-alike over one tar shard in the WebDataset layout (`<key>.flac` or `<key>.npy`
    members): random access through a member table and `os.pread` (no shared file offset across workers)."""

    def __init__(self, path: Path, split: SplitData, members: list[tuple[int, int]], kind: str, rate: int) -> None:
        self.path, self.split, self.members, self.kind, self.rate = path, split, members, kind, rate
        self._fd: tuple[int, int] | None = None  # (pid, fd): each worker process opens its own

    @property
    def clips(self) -> list[Clip]:
        return self.split.clips

    def __len__(self) -> int:
        return len(self.members)

    def get(self, index: int) -> np.ndarray:
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self.path, os.O_RDONLY))
        offset, size = self.members[index]
        data = os.pread(self._fd[1], size, offset)
        if self.kind == "flac":
            wave, _ = sf.read(io.BytesIO(data), dtype="float32")
            return wave
        return np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32) * np.float32(1 / FULL_SCALE)


def write_tar(folder: Path, split: SplitData, rate: int, kind: str) -> TarStore:
    """The clips of `split` resampled to `rate` in one WebDataset tar shard, each as FLAC or int16 .npy."""
    path = folder / f"shard-{kind}.tar"
    with tarfile.open(path, "w") as tar:
        for clip in split.clips:
            wave = load_audio(clip.audio_path, rate)
            buf = io.BytesIO()
            if kind == "flac":
                sf.write(buf, wave, rate, format="FLAC", subtype="PCM_16")
            else:
                np.save(buf, np.frombuffer(encode_clip(wave)[0], dtype="<i2"))
            for name, payload in ((f"{clip.clip_id}.{kind}", buf.getvalue()),
                                  (f"{clip.clip_id}.txt", clip.captions[0].encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    with tarfile.open(path) as tar:
        members = [(m.offset_data, m.size) for m in tar.getmembers() if m.name.endswith(f".{kind}")]
    return TarStore(path, split, members, kind, rate)


def make_packed(folder: Path, wav_split: SplitData, rate: int) -> tuple[dict[str, Callable[[], object]], float]:
    """Stores of the three packed candidates made from the WAV clips, and `hade pack`'s clips/s."""
    start = time.perf_counter()
    out = pack(wav_split.clips[0].audio_path.parent, folder / "packed", rate, progress=False).out
    pack_rate = len(wav_split.clips) / (time.perf_counter() - start)
    stores = {"packed": ClipAudioStore(read_split(out, "train"), rate, max_cache_bytes=0)}
    for kind in ("flac", "npy"):
        stores[f"tar-{kind}"] = write_tar(folder, wav_split, rate, kind)
    return stores, pack_rate


def pairs_of(store, clip_samples: int) -> TrainPairs:
    return TrainPairs(store, clip_samples, seed=0, replace_bad=True)


def raw_pairs(split: SplitData, rate: int, clip_samples: int) -> TrainPairs:
    return pairs_of(ClipAudioStore(split, rate, max_cache_bytes=0), clip_samples)


def per_clip_cost(split: SplitData, rate: int) -> dict[str, float]:
    """Median milliseconds per clip: decoding alone, resampling alone, and load_audio (both)."""
    decode, resample, total = [], [], []
    for clip in split.clips:
        t0 = time.perf_counter()
        if clip.audio_path.suffix == ".m4a":
            with open(clip.audio_path, "rb") as f:
                data, sr = av_audio.decode(f, "mov")
            data = data[:, 0]
        else:
            data, sr = sf.read(str(clip.audio_path), dtype="float32")
        t1 = time.perf_counter()
        if sr != rate:
            soxr.resample(data, sr, rate, quality="HQ")
        t2 = time.perf_counter()
        load_audio(clip.audio_path, rate)
        t3 = time.perf_counter()
        decode.append(t1 - t0), resample.append(t2 - t1), total.append(t3 - t2)
    return {"decode_ms": _ms(decode), "resample_ms": _ms(resample), "decode_resample_ms": _ms(total)}


def _ms(xs: list[float]) -> float:
    return round(1000 * statistics.median(xs), 3)


def store_read_cost(store) -> dict[str, float]:
    """Median milliseconds to read one clip back from a packed store (already at the rate: no resampling)."""
    times = []
    for i in range(len(store.clips)):
        t0 = time.perf_counter()
        store.get(i)
        times.append(time.perf_counter() - t0)
    ms = _ms(times)
    return {"decode_ms": ms, "resample_ms": 0.0, "decode_resample_ms": ms}


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
    from hade.models.factory import create_model
    from hade.train.objective import training_loss

    torch.manual_seed(0)
    model = create_model(ModelConfig(audio_encoder="htsat-cpu", text_pretrained=False,
                                     text_overrides={"num_hidden_layers": 2}))
    pairs = raw_pairs(split, model.sample_rate, model.clip_input_samples(4.0))
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


def workers_needed(cost_ms: float) -> str:
    c = cost_ms / 1000
    return f"ceil(S * b * {c:.5f}) + 1 (S=4 steps/s, b=128: {math.ceil(4 * 128 * c) + 1})"


def measure(args: argparse.Namespace, tmp: Path) -> dict:
    """Every row of the report, measured in this one process (see the module doc)."""
    clip_samples = seconds_to_samples(args.seconds, args.rate)
    workers = [int(w) for w in args.workers.split(",")]
    report: dict = {"clips": args.clips, "seconds": args.seconds, "source_rate": args.source_rate, "rate": args.rate,
                    "formats": {}}
    splits: dict[str, SplitData] = {}
    for fmt in args.formats.split(","):
        (tmp / fmt).mkdir()
        splits[fmt] = write_clips(tmp / fmt, fmt, args.clips, args.seconds, args.source_rate)
        row = per_clip_cost(splits[fmt], args.rate)
        pairs = raw_pairs(splits[fmt], args.rate, clip_samples)
        row["clips_per_s"] = {w: round(loader_throughput(pairs, w, args.batch), 1) for w in workers}
        report["formats"][fmt] = row
    wav = splits.get("wav") or write_clips(_mkdir(tmp / "wav"), "wav", args.clips, args.seconds, args.source_rate)
    stores, report["pack_clips_per_s"] = make_packed(tmp, wav, args.rate)
    for name, store in stores.items():
        row = store_read_cost(store)
        row["clips_per_s"] = {w: round(loader_throughput(pairs_of(store, clip_samples), w, args.batch), 1)
                              for w in workers}
        report["formats"][name] = row
    report["train_wait_2_workers"] = wait_share(splits[list(splits)[-1]], 2, args.batch, args.train_steps)
    sources = [r for f, r in report["formats"].items() if f not in PACKED]
    report["workers_needed"] = {
        "slowest_source": workers_needed(max(r["decode_resample_ms"] for r in sources)),
        "packed": workers_needed(report["formats"]["packed"]["decode_resample_ms"])}
    return report


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def print_report(report: dict) -> None:
    base = report["formats"].get("wav", next(iter(report["formats"].values())))["clips_per_s"]
    print(f"{report['clips']} clips of {report['seconds']:g} s at {report['source_rate']} Hz, read at {report['rate']} Hz; "
          f"`hade pack` of the WAV clips: {report['pack_clips_per_s']:.1f} clips/s")
    for fmt, row in report["formats"].items():
        ratios = {w: round(v / base[w], 2) for w, v in row["clips_per_s"].items()}
        print(f"{fmt:8s} decode {row['decode_ms']:7.3f} ms  resample {row['resample_ms']:7.3f} ms  "
              f"total {row['decode_resample_ms']:7.3f} ms/clip   clips/s by workers {row['clips_per_s']}  x WAV {ratios}")
    w = report["train_wait_2_workers"]
    print(f"CPU training step {w['step_s']:.3f} s; share waiting for data with 2 workers: {100 * w['wait_share']:.1f} %")
    for name, formula in report["workers_needed"].items():
        print(f"workers a GPU rank needs ({name}): {formula}")


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
    with tempfile.TemporaryDirectory() as tmp:
        report = measure(args, Path(tmp))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
