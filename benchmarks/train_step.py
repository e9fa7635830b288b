#!/usr/bin/env python3
"""Training-step cost of the comparison table's heads, side by side, as a ratio to DP.

    .venv/bin/python benchmarks/train_step.py [--heads dp,tha+dcr,...] [--batch 32] [--seconds 4]
                                              [--rounds 3] [--threads 1] [--json]

Each head is built as `hade ablate --table compare` trains it (htsat-cpu + pretrained MiniLM, the
table's row options; HCI+AC gets one auxiliary caption per clip) and takes full optimizer steps
(`hade.train.trainer.training_loss`, backward, AdamW) on the same fixed batch of random waveforms and
SynthCaps-like captions. After one warm-up step per head, `--rounds` rounds each time one step of
every head in turn, so a change in machine load hits all heads alike; a head's time is its median
over rounds, and the ratio is that over DP's. The compare table's "train s" column is wall-clock
under whatever else ran on the machine; these ratios are the fair comparison of cost.

Measured (this 2-core AMX Xeon, torch 2.13 CPU, 1 thread, batch 32 of 4 s clips, median of 3 rounds,
while two 1-thread training jobs ran), seconds per step and ratio to DP:
  dp 1.31 (1.00), tha+dcr 1.91 (1.46), coatt-single 3.40 (2.60), coatt-stacked 8.12 (6.20),
  coatt-iterated 7.46 (5.71), hci 1.25 (0.96), hci+ac 1.50 (1.14), diffatr 1.26 (0.96).
Co-attention pays for its pair-dependent layers: every one of the B² in-batch pairs runs the guided
attention units and their FFNs (stacked and iterated add a second, fully pair-dependent module).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

import hade
from hade.config import TrainConfig
from hade.experiments.ablate import COMPARE_HEADS, table_rows
from hade.train.trainer import training_loss

WORDS = ("a dog barks twice", "rain falls steadily on a roof", "a siren wails in the distance",
         "birds chirp while wind blows", "a bell rings three times", "water bubbles in a pot",
         "a car engine idles then stops", "people talk quietly in a large hall")


def batch_for(model, size: int, seconds: float, generator: torch.Generator) -> dict:
    """Random waveforms [size, seconds·rate] and captions of 8-17 words, one clip per caption."""
    audio = 0.1 * torch.randn(size, int(seconds * model.sample_rate), generator=generator)
    captions = [f"{WORDS[i % len(WORDS)]} and {WORDS[(3 * i + 1) % len(WORDS)]}" for i in range(size)]
    return {"audio": audio, "caption": captions, "clip_index": torch.arange(size),
            "aux": [WORDS[(5 * i + 2) % len(WORDS)] for i in range(size)]}


def build(head: str) -> tuple[torch.nn.Module, torch.optim.Optimizer, float]:
    cfg = TrainConfig()
    row = next((r for r in table_rows("compare") if r.name == head), None)
    if row is None:
        raise SystemExit(f"--heads: {head!r} is not a row of the compare table {COMPARE_HEADS}")
    row.apply(cfg)
    torch.manual_seed(0)
    model = hade.create_model(copy.deepcopy(cfg.model)).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-5), cfg.model.temperature


def step(model, optimizer, temperature: float, batch: dict) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    training_loss(model, batch, temperature)["loss"].backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heads", default=",".join(COMPARE_HEADS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    if "dp" not in heads:
        heads.insert(0, "dp")  # the reference of the ratios
    runs = {}
    for head in heads:
        model, optimizer, temperature = build(head)
        batch = batch_for(model, args.batch, args.seconds, torch.Generator().manual_seed(0))
        step(model, optimizer, temperature, batch)  # warm-up
        runs[head] = (model, optimizer, temperature, batch)
    times: dict[str, list[float]] = {h: [] for h in heads}
    for _ in range(args.rounds):
        for head in heads:
            times[head].append(step(*runs[head]))
    median = {h: statistics.median(t) for h, t in times.items()}
    rows = [{"head": h, "seconds_per_step": round(median[h], 3), "ratio_to_dp": round(median[h] / median["dp"], 2),
             "params_million": round(sum(p.numel() for p in runs[h][0].parameters()) / 1e6, 2)} for h in heads]
    if args.json:
        print(json.dumps({"batch": args.batch, "seconds": args.seconds, "threads": args.threads, "rows": rows},
                         indent=2))
        return
    print(f"training step, batch {args.batch} of {args.seconds:g} s clips, {args.threads} thread(s), "
          f"median of {args.rounds} rounds")
    print(f"{'head':16} {'s/step':>8} {'× DP':>6} {'params M':>9}")
    for r in rows:
        print(f"{r['head']:16} {r['seconds_per_step']:8.2f} {r['ratio_to_dp']:6.2f} {r['params_million']:9.2f}")


if __name__ == "__main__":
    main()
