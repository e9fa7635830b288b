#!/usr/bin/env python3
"""Peak memory of `hade train` against the size of the data set (issue 11: bounded memory).

Writes two JSONL data sets of distinct 10 s, 32 kHz WAV clips (by default 1,000 and 10,000 clips; tones and
noise with one caption each, fast to make, since only the input pipeline's memory is measured), then runs
the same `hade train` on each — the CPU model, batch 32, `--max-steps` steps, `--workers` loader processes —
and samples the whole process tree (trainer + loader workers) every 0.5 s:

  * peak RSS of the tree (the sum over processes; shared pages count once per process, so it overstates),
  * peak PSS of the tree (shared pages divided among the processes that share them: the honest total).

It prints both peaks per size and their ratio, largest over smallest, side by side in one run.

    .venv/bin/python benchmarks/train_memory.py --out /tmp/trainmem [--sizes 1000,10000] [--max-steps 200]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 32000
SECONDS = 10.0
WORDS = ("a dog barks", "rain falls", "a bell rings", "a car passes", "birds sing", "a door creaks",
         "water runs", "a man speaks", "wind blows", "an engine idles")


def make_set(root: Path, clips: int, validation: int = 32, seed: int = 0) -> Path:
    """`root`/train.jsonl and val.jsonl over distinct WAV files in `root`/audio (kept when already there)."""
    done = root / "train.jsonl"
    if done.is_file() and sum(1 for _ in done.open()) == clips:
        return root
    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(SECONDS * SAMPLE_RATE)) / SAMPLE_RATE
    lines: dict[str, list[str]] = {"train": [], "val": []}
    for i in range(clips + validation):
        kind = i % len(WORDS)
        tone = np.sin(2 * np.pi * (110 + 40 * kind + rng.uniform(0, 20)) * t)
        wave = (0.3 * tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
        path = audio / f"clip{i:06d}.wav"
        if not path.is_file():
            sf.write(path, wave, SAMPLE_RATE, subtype="PCM_16")
        split = "train" if i < clips else "val"
        lines[split].append(json.dumps({"audio": f"audio/{path.name}", "captions": [f"{WORDS[kind]} ({i})"]}))
    (root / "val.jsonl").write_text("\n".join(lines["val"]) + "\n")
    done.write_text("\n".join(lines["train"]) + "\n")  # last: its presence marks a finished set
    return root


def tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes over `proc` and its descendants; vanished processes count 0."""
    rss = pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


def train_peak(data: Path, out: Path, max_steps: int, workers: int) -> dict[str, float]:
    cfg = out.with_suffix(".config.json")
    cfg.write_text(json.dumps({"batch_size": 32, "clip_seconds": 4.0, "validate_every_steps": max_steps,
                               "validate_clips": 32, "save_every_steps": max_steps,
                               "model": {"audio_encoder": "htsat-cpu", "head": "dp"}}))
    cmd = [sys.executable, "-m", "hade.cli", "train", "--data", str(data), "--out", str(out), "--config", str(cfg),
           "--max-steps", str(max_steps), "--epochs", "1000", "--workers", str(workers), "--no-resume", "--quiet"]
    started = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_rss = peak_pss = 0
    while proc.poll() is None:
        rss, pss = tree_memory(proc)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.5)
    if proc.returncode != 0:
        raise SystemExit(f"hade train failed on {data} (exit {proc.returncode}):\n{proc.stderr.read()[-3000:]}")
    return {"peak_rss_gb": peak_rss / 2**30, "peak_pss_gb": peak_pss / 2**30,
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the data sets and runs")
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated clip counts")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    for n in sizes:
        t0 = time.perf_counter()
        data = make_set(args.out / f"set{n}", n)
        made = time.perf_counter() - t0
        results[n] = {**train_peak(data, args.out / f"run{n}", args.max_steps, args.workers), "make_seconds": made}
        r = results[n]
        print(f"{n:>6} clips: peak RSS {r['peak_rss_gb']:.2f} GB, peak PSS {r['peak_pss_gb']:.2f} GB "
              f"({args.max_steps} steps in {r['seconds']:.0f} s; data made in {made:.0f} s)", flush=True)
    small, large = results[min(sizes)], results[max(sizes)]
    print(f"largest / smallest set: RSS {large['peak_rss_gb'] / small['peak_rss_gb']:.3f}x, "
          f"PSS {large['peak_pss_gb'] / small['peak_pss_gb']:.3f}x "
          f"(htsat-cpu + MiniLM, dp, batch 32, {args.workers} workers)")
    (args.out / "train_memory.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
