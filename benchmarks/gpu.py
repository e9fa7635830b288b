#!/usr/bin/env python3
"""GPU readiness in one prepared run (issue 11, item 5): CUDA tests, encoder benchmark, training throughput
fed from a packed set, and a 2-process nccl DDP equality check; a one-screen summary, also as JSON.

    .venv/bin/python benchmarks/gpu.py --out gpu.json [--batch 128] [--steps 12] [--workers 6]
    .venv/bin/python benchmarks/gpu.py --cpu-smoke --out smoke.json     # the same steps, tiny, on CPU

Steps, each timed and reported as ok / skip / fail (a failing step does not stop the others):
1. `cuda-tests`: `pytest -m cuda` over tests/ (the tests that need CUDA carry that marker; none collected
   is reported as a skip, not a failure).
2. `encoder`: benchmarks/encoder.py's comparison on CUDA (hade against the LAION-CLAP reference: fp32,
   bf16 and fp16 rows; fails when fp32 outputs differ by more than 1e-4).
   `encoder-passt`, `encoder-beats`: the same for PaSST-S against hear21passt and BEATs iter3 against ESPnet's
   BEATs (benchmarks/_vit_rows.py, `encoder.py --encoder passt|beats`): fp32, bf16 and fp16 clips/s of both,
   max |difference| per level and on the clip vector (fp32 with TF32 off; fails above 1e-3, since at full
   size float32 rounding over 12 blocks already reaches 1.8e-4 for BEATs on CPU, docs/encoders.md), and the
   peak CUDA memory of one fp32 batch per side. Skipped, saying so, when the reference is not installed.
3. `train-dp`, `train-tha+dcr`: training throughput in clips/s at the paper's shapes, HTSAT-tiny (10 s at
   32 kHz) and a 12-block BERT-base-sized text encoder with random weights, AdamW, bf16 autocast, batch
   `--batch`; the data comes from a packed set (`hade pack` of generated clips) through the training
   DataLoader (`--workers` processes, pinned memory). Reported: clips/s, seconds per step, the share of
   the loop spent waiting for data, and peak GPU memory.
4. `ddp-nccl`: with two GPUs, `python -m hade.train` under torchrun with 2 processes against one process
   on the same packed set and global batch (fp32): the per-step losses must agree within 1e-3 (relative);
   the largest weight difference is reported. Skipped, with a line saying so, on fewer than 2 GPUs.

`--cpu-smoke` runs the same steps on CPU with tiny shapes (htsat-test, a 2-block text encoder, batch 4,
one encoder round on 1 s clips; passt-test and beats-test for the PaSST and BEATs rows) in well under a minute; the CUDA tests and the DDP check are skipped
there (the gloo equality check is tests/train/test_distributed.py). Exit status: 1 if a step failed.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}
TINY_TEXT = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}
HEADS = ("dp", "tha+dcr")
VIT_ENCODERS = ("passt", "beats")
VIT_TOL = 1e-3  # fp32 outputs of a ViT pair (see the module docstring)
CAPTIONS = ("a dog barks twice while a car passes by", "rain falls on a tin roof", "birds sing in the morning",
            "people talk in a crowded hall while music plays", "a door slams shut", "water drips into a sink")


@dataclass
class Step:
    """One line of the summary: a step's outcome, its time and what it measured."""

    name: str
    status: str = "ok"  # ok, skip or fail
    seconds: float = 0.0
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Shapes:
    """The shapes a run uses: the paper's on GPU, tiny ones for --cpu-smoke."""

    device: str
    audio_encoder: str
    text_overrides: dict[str, int]
    batch: int
    steps: int
    warmup: int
    clip_seconds: float
    precision: str
    workers: int
    encoder_args: dict[str, Any]
    vit_presets: dict[str, str]  # PaSST / BEATs preset of the encoder-passt / encoder-beats steps
    vit_args: dict[str, Any]  # batch, seconds, rounds, threads of those steps


def shapes_for(args: argparse.Namespace) -> Shapes:
    if args.cpu_smoke:
        return Shapes("cpu", "htsat-test", TINY_TEXT, batch=4, steps=2, warmup=1, clip_seconds=1.0, precision="fp32",
                      workers=1, encoder_args={"device": "cpu", "batch": 1, "seconds": 1.0, "rounds": 1, "threads": 1},
                      vit_presets={"passt": "passt-test", "beats": "beats-test"},
                      vit_args={"batch": 1, "seconds": 1.0, "rounds": 1, "threads": 1})
    return Shapes("cuda", "htsat-tiny", BERT_BASE, batch=args.batch, steps=args.steps, warmup=2, clip_seconds=10.0,
                  precision="bf16", workers=args.workers,
                  encoder_args={"device": "cuda", "batch": 16, "seconds": 10.0, "rounds": 5, "threads": None},
                  vit_presets={"passt": "passt-s", "beats": "beats-iter3"},
                  vit_args={"batch": 16, "seconds": 10.0, "rounds": 5, "threads": torch.get_num_threads()})


def timed(name: str, fn: Callable[[], Step]) -> Step:
    """Run one step; an exception becomes a failed step with its message."""
    start = time.perf_counter()
    try:
        step = fn()
    except Exception as exc:  # noqa: BLE001 - one failing step must not hide the others' results
        step = Step(name, "fail", detail=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])
    step.seconds = round(time.perf_counter() - start, 1)
    print(f"[{step.status:4s}] {step.name} ({step.seconds} s) {step.detail}", flush=True)
    return step


def _env() -> dict[str, str]:
    src = str(ROOT / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def cuda_tests(shapes: Shapes) -> Step:
    if shapes.device != "cuda":
        return Step("cuda-tests", "skip", detail="CPU smoke: no CUDA tests")
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", str(ROOT / "tests")]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode == 5:
        return Step("cuda-tests", "skip", detail=f"no test carries the cuda marker ({last})")
    return Step("cuda-tests", "ok" if proc.returncode == 0 else "fail", detail=last,
                data={"returncode": proc.returncode, "tail": proc.stdout[-2000:]})


def _encoder_module():
    """benchmarks/encoder.py, imported by path (it is a script, not a package module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("hade_bench_encoder", ROOT / "benchmarks" / "encoder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def encoder_bench(shapes: Shapes) -> Step:
    """benchmarks/encoder.py's comparison (in this process: no second start-up of torch)."""
    enc = _encoder_module()
    try:
        result = enc.measure(**shapes.encoder_args)
    except enc.ReferenceUnavailable as exc:
        return Step("encoder", "skip", detail=f"LAION-CLAP reference unavailable: {exc}"[:200])
    rows = ", ".join(f"{r['precision']} {r['hade_clips_s']:.1f} clips/s ({r['ratio']:.2f}x ref)" for r in result["rows"])
    worst = max(result["max_diff"]["stages"] + [result["max_diff"]["pooled"]])
    status = "ok" if worst <= 1e-4 else "fail"  # encoder.py's own tolerance on fp32 outputs
    return Step("encoder", status, detail=f"{rows}; max diff {worst:.2g}",
                data={k: v for k, v in result.items() if k != "times_s"})


def vit_encoder_bench(shapes: Shapes, encoder: str) -> Step:
    """benchmarks/_vit_rows.py's comparison of one ViT encoder (`passt` / `beats`) with its reference."""
    _encoder_module()  # puts benchmarks/ on sys.path, where _vit_rows and the reference helpers live
    import _vit_rows

    name = f"encoder-{encoder}"
    pair = _vit_rows.Pair(encoder, shapes.vit_presets[encoder])
    if not pair.helper.available():
        return Step(name, "skip", detail=f"{pair.reference_name} reference unavailable (make install)")
    a = shapes.vit_args
    result = _vit_rows.measure_pair(pair, a["batch"], a["seconds"], a["rounds"], a["threads"], memory=False,
                                    device=shapes.device)
    rows = ", ".join(f"{r['precision']} {r['hade_clips_s']:.1f} clips/s ({r['ratio']:.2f}x ref)" for r in result["rows"])
    worst = max(result["max_diff"]["levels"] + [result["max_diff"]["pooled"]])
    memory = result["peak_cuda_mib"]
    detail = f"{pair.preset}: {rows}; max diff {worst:.2g}" + (
        f"; peak {memory['hade']:.0f} vs {memory['reference']:.0f} MiB" if memory else "")
    return Step(name, "ok" if worst <= VIT_TOL else "fail", detail=detail,
                data={k: v for k, v in result.items() if k != "times_s"})


def write_packed_set(root: Path, clips: int, seconds: float, rate: int, val_clips: int = 0) -> Path:
    """Generated WAV clips (noise and a tone) with SynthCaps-like captions as a manifest, packed at `rate`."""
    from hade.config import seconds_to_samples
    from hade.data.packed.writer import pack

    raw = root / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = seconds_to_samples(seconds, rate)
    t = np.arange(n) / rate
    lines = []
    for i in range(clips + val_clips):
        wave = 0.05 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * (150 + 13 * i) * t)
        sf.write(str(raw / f"c{i:05d}.wav"), wave.astype(np.float32), rate, subtype="PCM_16")
        caption = f"{CAPTIONS[i % len(CAPTIONS)]} (take {i})"
        lines.append(json.dumps({"id": f"c{i}", "audio": f"c{i:05d}.wav", "captions": [caption]}) + "\n")
    (raw / "train.jsonl").write_text("".join(lines[:clips]))
    if val_clips:
        (raw / "val.jsonl").write_text("".join(lines[clips:]))
    return pack(raw, root / "packed", rate, progress=False).out


def preset_rate(audio_encoder: str) -> int:
    """The sample rate of an HTSAT preset: the rate to pack at, so that reading needs no resampling."""
    from hade.models.encoders.htsat import HTSAT_PRESETS

    return int(HTSAT_PRESETS[audio_encoder].sample_rate)


def model_config(shapes: Shapes, head: str):
    from hade.config import ModelConfig

    return ModelConfig(audio_encoder=shapes.audio_encoder, text_pretrained=False, text_overrides=dict(shapes.text_overrides),
                       head=head, max_text_tokens=40 if shapes.device == "cuda" else 24,
                       embed_dim=256 if shapes.device == "cuda" else 32)


def step_loss(model, batch: dict, temperature: float = 0.07) -> torch.Tensor:
    """The trainer's loss of one batch (hade.train.objective.training_loss: NT-Xent of every contrastive score
    matrix of the head plus its auxiliary losses), one process."""
    from hade.train.objective import training_loss

    return training_loss(model, batch, temperature)["loss"]


def _loader(packed: Path, model, shapes: Shapes):
    from hade.data.dataset import ClipAudioStore, TrainPairs
    from hade.data.loader import StepBatchSampler, train_loader
    from hade.data.readers import read_split

    samples = model.samples_for(shapes.clip_seconds)
    pairs = TrainPairs(ClipAudioStore(read_split(packed, "train"), model.sample_rate, max_cache_bytes=0), samples,
                       seed=0, replace_bad=True)
    sampler = StepBatchSampler(pairs.pair_clip_index, shapes.batch, seed=0)
    return sampler, train_loader(pairs, sampler, shapes.workers, seed=0, pin_memory=shapes.device == "cuda")


def _batches(sampler, loader):
    """Endless batches, epoch after epoch (the persistent workers carry over)."""
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(shapes: Shapes, packed: Path, head: str) -> Step:
    """Clips/s of real optimizer steps (forward, backward, AdamW) with the data read from the packed set."""
    import hade

    torch.manual_seed(0)
    device = torch.device(shapes.device)
    model = hade.create_model(model_config(shapes, head)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sampler, loader = _loader(packed, model, shapes)
    batches = _batches(sampler, loader)
    amp = torch.bfloat16 if shapes.precision == "bf16" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    waited = 0.0
    for i in range(shapes.warmup + shapes.steps):
        if i == shapes.warmup:
            _sync(device)
            start, waited = time.perf_counter(), 0.0
        t0 = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - t0
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = step_loss(model, batch)
        loss.backward()
        optimizer.step()
    _sync(device)
    elapsed = time.perf_counter() - start
    data = {"head": head, "batch": shapes.batch, "steps": shapes.steps, "precision": shapes.precision,
            "clip_seconds": shapes.clip_seconds, "workers": shapes.workers, "clips_per_s": shapes.batch * shapes.steps / elapsed,
            "s_per_step": elapsed / shapes.steps, "data_wait_share": waited / elapsed, "loss": float(loss.detach()),
            "params_million": sum(p.numel() for p in model.parameters()) / 1e6}
    if device.type == "cuda":
        data["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    detail = (f"{data['clips_per_s']:.1f} clips/s, {data['s_per_step']:.3f} s/step, waiting for data "
              f"{100 * data['data_wait_share']:.1f} %" + (f", peak {data['peak_gpu_gib']:.1f} GiB" if "peak_gpu_gib" in data else ""))
    return Step(f"train-{head}", "ok" if np.isfinite(data["loss"]) else "fail", detail=detail, data=data)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_run(packed: Path, run: Path, config: Path, processes: int) -> None:
    cmd = [sys.executable, "-m", "hade.train", "--data", str(packed), "--out", str(run), "--config", str(config), "--quiet"]
    if processes > 1:
        cmd[1:3] = ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(processes),
                    "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "hade.train"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:8])}... exited {proc.returncode}: {proc.stderr.strip()[-600:]}")


def _run_losses(run: Path) -> list[float]:
    history = json.loads((run / "metrics.json").read_text())["history"]
    return [h["loss"] for h in history if "step" in h and "loss" in h]


def ddp_check(shapes: Shapes, root: Path, force_cpu: bool = False) -> Step:
    """1 process against 2 (torchrun, nccl) on the same packed set and global batch: same per-step losses."""
    from safetensors.torch import load_file

    from hade.config import TrainConfig, to_dict

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus < 2 and not force_cpu:
        why = "CPU smoke (the gloo check is tests/train/test_distributed.py)" if shapes.device == "cpu" else f"{gpus} GPU(s)"
        return Step("ddp-nccl", "skip", detail=f"skipped: needs 2 GPUs, found {why}")
    packed = write_packed_set(root, clips=16, seconds=1.0, rate=preset_rate("htsat-test"), val_clips=8)
    no_dropout = {**TINY_TEXT, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}  # ranks draw apart
    tiny = model_config(Shapes("cpu", "htsat-test", no_dropout, 4, 1, 0, 1.0, "fp32", 1, {}), "dp")
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1e-3, text_lr=1e-3, clip_seconds=1.0, max_steps=2, save_every_steps=1000,
                      num_workers=1, device="cpu" if force_cpu else "auto", model=tiny)
    config = root / "ddp-config.json"
    config.write_text(json.dumps(to_dict(cfg)))
    runs = {n: root / f"run-{n}" for n in (1, 2)}
    for n, run in runs.items():
        _train_run(packed, run, config, n)
    losses = {n: _run_losses(run) for n, run in runs.items()}
    weights = {n: load_file(str(run / "checkpoints" / "last" / "model.safetensors")) for n, run in runs.items()}
    params = [k for k in weights[1] if not any(b in k for b in ("running_", "num_batches_tracked"))]  # not buffers
    weight_diff = max(float((weights[1][k].float() - weights[2][k].float()).abs().max()) for k in params)
    rel = max(abs(a - b) / max(abs(a), 1e-8) for a, b in zip(losses[1], losses[2]))
    same = len(losses[1]) == len(losses[2]) > 0 and rel <= 1e-3
    data = {"losses_1": losses[1], "losses_2": losses[2], "loss_rel_diff": rel, "max_weight_diff": weight_diff}
    status = "ok" if same else ("skip" if force_cpu else "fail")  # CPU: BatchNorm per rank, not comparable
    return Step("ddp-nccl" if not force_cpu else "ddp-gloo", status,
                detail=f"{losses[1]} vs {losses[2]}: losses 1 vs 2 processes: max rel diff {rel:.2g}; max |weight diff| {weight_diff:.2g}", data=data)


def summary(steps: list[Step], shapes: Shapes, total: float) -> str:
    lines = ["", "=" * 78, f"hade GPU readiness ({'CPU smoke' if shapes.device == 'cpu' else device_name()}), "
             f"{total:.0f} s", "-" * 78]
    lines += [f"{s.status.upper():5s} {s.name:14s} {s.seconds:6.1f} s  {s.detail}"[:160] for s in steps]
    lines.append("=" * 78)
    return "\n".join(lines)


def device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"


def run_all(args: argparse.Namespace) -> tuple[list[Step], Shapes]:
    shapes = shapes_for(args)
    if shapes.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py: no CUDA device; run with --cpu-smoke for the CPU version")
    torch.set_num_threads(1 if args.cpu_smoke else max(1, torch.get_num_threads()))
    steps = [timed("cuda-tests", lambda: cuda_tests(shapes))]
    if not args.skip_encoder:
        steps.append(timed("encoder", lambda: encoder_bench(shapes)))
        for encoder in VIT_ENCODERS:
            steps.append(timed(f"encoder-{encoder}", lambda e=encoder: vit_encoder_bench(shapes, e)))
    with tempfile.TemporaryDirectory(prefix="hade-gpu-") as tmp:
        root = Path(tmp)
        rate = preset_rate(shapes.audio_encoder)
        holder: dict[str, Path] = {}

        def make() -> Step:
            clips = shapes.batch * 4
            holder["packed"] = write_packed_set(root / "throughput", clips, shapes.clip_seconds, rate)
            return Step("pack", detail=f"{clips} clips of {shapes.clip_seconds:g} s at {rate} Hz")

        steps.append(timed("pack", make))
        for head in HEADS:
            if "packed" in holder:
                steps.append(timed(f"train-{head}", lambda h=head: throughput(shapes, holder["packed"], h)))
        steps.append(timed("ddp", lambda: ddp_check(shapes, root / "ddp", force_cpu=args.ddp_on_cpu)))
    return steps, shapes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="write the summary as JSON here")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU (CI)")
    ap.add_argument("--batch", type=int, default=128, help="training batch on GPU (paper: 64-128)")
    ap.add_argument("--steps", type=int, default=12, help="timed optimizer steps per head (after 2 warm-up steps)")
    ap.add_argument("--workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 2)),
                    help="DataLoader workers feeding the GPU")
    ap.add_argument("--skip-encoder", action="store_true", help="leave out the encoder benchmarks (HTSAT, PaSST, BEATs)")
    ap.add_argument("--ddp-on-cpu", action="store_true",
                    help="run the DDP check with gloo on CPU (runs, but BatchNorm keeps per-rank statistics on CPU, "
                         "so losses are reported, not compared)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    steps, shapes = run_all(args)
    total = time.perf_counter() - start
    print(summary(steps, shapes, total))
    if args.out:
        from hade.utils.atomic import write_json_atomic

        write_json_atomic(args.out, {"device": shapes.device, "device_name": device_name() if shapes.device == "cuda" else "cpu",
                                     "cpu_smoke": args.cpu_smoke, "total_s": round(total, 1),
                                     "torch": torch.__version__,
                                     "steps": [s.__dict__ for s in steps]})
    return 1 if any(s.status == "fail" for s in steps) else 0


if __name__ == "__main__":
    raise SystemExit(main())
