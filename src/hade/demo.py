"""`hade demo` / `make demo`: the embedded default job.

Synthesises a small SynthCaps set, trains the small CPU model, evaluates it on the held-out split next
to chance level, and prints a few text→audio searches. Re-running continues where it stopped (the data
generator and the trainer both resume).
"""
from __future__ import annotations

from pathlib import Path

import torch

from hade.config import ModelConfig, TrainConfig
from hade.data.readers import read_split
from hade.data.synthcaps import generate
from hade.eval.evaluate import EncodedSplit, evaluate_run
from hade.eval.metrics import format_metrics_table
from hade.train.trainer import train
from hade.checkpoint import load
from hade.utils.atomic import write_json_atomic

DEMO_CLIPS = 480
DEMO_HEAD = "tha+dcr"  # the best HADE head on SynthCaps at this scale (docs/results.md)
DEMO_EPOCHS = 5  # best validation epoch of a 6-epoch run was 3; see the note in demo_config


def demo_config(head: str, epochs: int) -> TrainConfig:
    """The demo's training configuration: the small CPU model (htsat-cpu + MiniLM), 4 s clips.

    Sized so that `make demo` stays under 10 minutes on an idle 2-core machine: measured 8 min 15 s (5 epochs,
    a checkpoint every 50 steps), against 10 min 39 s with 6 epochs and a checkpoint every 25 steps, where
    writing checkpoints (~300 MB each, with the optimiser state) took about 95 s."""
    return TrainConfig(epochs=epochs, batch_size=32, lr=5e-4, text_lr=3e-5, clip_seconds=4.0, seed=0,
                       save_every_steps=50, model=ModelConfig(audio_encoder="htsat-cpu", text_encoder="minilm",
                                                              head=head, embed_dim=256))


def run_demo(out: Path, clips: int | None = None, minutes: float | None = None, head: str | None = None,
             progress: bool = True) -> int:
    """Synthesise, train, evaluate and search (each step resumes); returns the exit code."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(out)
    data_dir = out / "synthcaps"
    clips = clips or DEMO_CLIPS
    print(f"[1/4] SynthCaps: {clips} captioned clips -> {data_dir}")
    generate(data_dir, clips=clips, seed=0, sample_rate=16000, duration=4.0, layout="clotho", progress=progress)
    epochs = DEMO_EPOCHS if minutes is None else max(1, round(DEMO_EPOCHS * minutes / 4.0))
    cfg = demo_config(head or DEMO_HEAD, epochs)
    print(f"[2/4] training head '{cfg.model.head}' (HTSAT-cpu + MiniLM) for {epochs} epochs -> {out / 'run'}")
    summary = train(data_dir, out / "run", cfg, progress=progress)
    print(f"      {summary.global_step} steps in {summary.seconds} s; best epoch {summary.best_epoch}")
    print("[3/4] evaluation split, community protocol (each caption queries its clip; each clip its captions)")
    model = load(out / "run" / "checkpoints" / "best")
    run = evaluate_run(model, read_split(data_dir, "evaluation"), cfg.clip_seconds, progress=progress)
    write_json_atomic(out / "eval_metrics.json", run.metrics.to_dict())
    print(format_metrics_table(run.metrics, run.metrics.chance))
    print("[4/4] a few text → audio searches on the evaluation split")
    show_searches(run.encoded, run.scores)
    print(f"metrics: {out / 'eval_metrics.json'}   curve: {out / 'run' / 'curve.png'}")
    return 0


def show_searches(encoded: EncodedSplit, scores: torch.Tensor, queries: int = 3, top: int = 3) -> None:
    """Print `queries` captions spread over the split, each with its `top` clips by score ([T, A] scores)."""
    for t in range(0, len(encoded.captions), max(1, len(encoded.captions) // queries))[:queries]:
        best = torch.argsort(scores[t], descending=True, stable=True)[:top].tolist()
        truth = int(encoded.text_clip[t])
        print(f'  "{encoded.captions[t]}"  (its clip: {encoded.clip_ids[truth]})')
        for rank, a in enumerate(best, 1):
            mark = "✓" if a == truth else " "
            print(f"    {rank}. {mark} {encoded.clip_ids[a]}  score {scores[t, a]:.3f}  — {split_caption(encoded, a)}")


def split_caption(encoded: EncodedSplit, clip: int) -> str:
    """The first caption of clip index `clip` ("" when it has none)."""
    for caption, c in zip(encoded.captions, encoded.text_clip):
        if int(c) == clip:
            return caption
    return ""
