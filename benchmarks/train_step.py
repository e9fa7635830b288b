#!/usr/bin/env python3
"""Training-step cost of the comparison table's heads, side by side, as a ratio to DP.

    .venv/bin/python benchmarks/train_step.py [--heads dp,tha+dcr,...] [--batch 32] [--seconds 4]
                                              [--rounds 3] [--threads 1] [--json]

Each head is built as `hade ablate --table compare` trains it (htsat-cpu + pretrained MiniLM, the
table's row options; HCI+AC gets one auxiliary caption per clip) and takes full optimizer steps
(`hade.train.objective.training_loss`, backward, AdamW) on the same fixed batch of random waveforms and
SynthCaps captions (`caption_for_scene` on random scenes: 15 words on average, up to ~40, as in the
data `hade ablate` trains on; the cost of THA and co-attention grows with the caption length). After
one warm-up step per head, `--rounds` rounds each time one step of every head in turn, so a change in machine load hits all heads alike; a head's time is its median
over rounds, and the ratio is that over DP's. The compare table's "train s" column is wall-clock
under whatever else ran on the machine; these ratios are the fair comparison of cost.

Measured (this 2-core AMX Xeon, torch 2.13 CPU, 1 thread, batch 32 of 4 s clips, median of 3 rounds,
while two 1-thread training jobs ran), seconds per step and ratio to DP:
  dp 1.68 (1.00), tha+dcr 2.55 (1.52), hci 1.80 (1.07), hci+ac 2.69 (1.60), diffatr 1.81 (1.08);
  co-attention, scoring texts in length groups (a later run, DP 1.61): coatt-single 4.10 (2.55),
  coatt-stacked 8.84 (5.50), coatt-iterated 8.95 (5.57). Before the length groups, when every caption
  was padded to the batch's longest: 5.30 (3.15), 12.63 (7.51), 12.89 (7.67).
Co-attention pays for its pair-dependent layers: every one of the B² in-batch pairs runs the guided
attention units and their FFNs (stacked and iterated add a second, fully pair-dependent module).
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import numpy as np
import torch

import hade
from hade.config import TrainConfig
from hade.data.synthcaps import EVENT_TYPES
from hade.data.synthcaps.captions import caption_for_scene
from hade.data.synthcaps.scenes import sample_scene
from hade.experiments.ablate import COMPARE_HEADS, table_rows
from hade.train.objective import training_loss


def batch_for(model, size: int, seconds: float, seed: int = 0) -> dict:
    """Random waveforms [size, seconds·rate], one SynthCaps caption (and one auxiliary caption) per clip."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, sorted(EVENT_TYPES)) for _ in range(size)]
    audio = 0.1 * torch.randn(size, int(seconds * model.sample_rate), generator=torch.Generator().manual_seed(seed))
    return {"audio": audio, "caption": [caption_for_scene(s, rng) for s in scenes], "clip_index": torch.arange(size),
            "aux": [caption_for_scene(s, rng) for s in scenes]}


def build(head: str) -> tuple[torch.nn.Module, torch.optim.Optimizer, float]:
    cfg = TrainConfig()
    row = next((r for r in table_rows("compare") if r.name == head), None)
    if row is None:
        raise SystemExit(f"--heads: {head!r} is not a row of the compare table {COMPARE_HEADS}")
    row.apply(cfg)
    torch.manual_seed(0)
    model = hade.create_model(copy.deepcopy(cfg.model)).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-5), cfg.temperature


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
        batch = batch_for(model, args.batch, args.seconds)
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
