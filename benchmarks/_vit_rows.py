"""`benchmarks/encoder.py --encoder passt|beats`: hade's PaSST-S against hear21passt, or hade's BEATs iter3
against ESPnet's BEATs encoder (not part of hade).

Both models of a pair have the full size (PaSST-S: 32 kHz, 128 mel bins, 12 blocks of 768; BEATs iter3: 16 kHz,
128 fbank bins, 12 blocks of 768) with the reference's seeded random weights, loaded into hade's encoder through
its key map; the same batch of `--seconds` clips (PaSST: at most 10 s, one segment). Rows: max |hade - reference| per level (blocks 4/8/12, patch tokens) and on the clip vector (fp32);
clips/s of both in fp32 and, on CPUs with native bf16, under bf16 autocast (interleaved rounds, median),
and the CPU seconds per clip of the same calls (a second set of interleaved rounds timed with process_time);
peak memory: the peak RSS of a fresh process that builds one model and encodes the batch once, above that
process's RSS after importing torch (`--memory-probe`, run once per side).
On CUDA (`--device cuda`, and benchmarks/gpu.py's `encoder-passt` / `encoder-beats` steps): fp32, bf16 and fp16
autocast rows, the equality computed with TF32 off (cuDNN's convolutions use it by default), no CPU-time
columns, and the peak CUDA memory of one fp32 batch per side instead of the RSS probe. `Pair(encoder, preset)`
takes another preset of the same architecture (gpu.py's `--cpu-smoke` uses passt-test / beats-test).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_PRESETS = {"passt": "passt-s", "beats": "beats-iter3"}  # what `encoder.py --encoder` (and its probe) builds


class Pair:
    """How one encoder and its reference are built and called."""

    def __init__(self, encoder: str, preset: str | None = None) -> None:
        from hade.models.encoders.audio import audio_encoder_config

        self.encoder = encoder
        self.preset = preset or DEFAULT_PRESETS[encoder]
        self.config = audio_encoder_config(self.preset)
        self.reference_name = {"passt": "hear21passt", "beats": "ESPnet BEATs"}[encoder]
        self.helper = __import__(f"_{encoder}_reference")

    def build(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        pair = self.helper.hade_pair(self.config)
        return pair[0], pair[1]

    def build_one(self, side: str) -> torch.nn.Module:
        from hade.models.encoders.audio import build_audio_encoder

        if side == "reference":
            return self.helper.build_reference(self.config)
        return build_audio_encoder(self.config).eval()

    def reference_call(self, reference: torch.nn.Module) -> Any:
        """waveform -> the reference's clip output, as its users call it."""
        if self.encoder == "passt":
            return lambda x: reference(x)[1]
        return lambda x: reference(x, torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device))[0]

    def reference_levels(self, reference: torch.nn.Module, wave: torch.Tensor) -> tuple[list[torch.Tensor],
                                                                                          torch.Tensor]:
        """(the reference's tokens of hade's levels, its clip vector)."""
        c = self.config
        if self.encoder == "passt":
            blocks, normed, clip = self.helper.block_outputs(reference, wave)
            return [(normed if lv == c.depth else blocks[lv - 1])[:, 2:] for lv in c.levels], clip
        blocks, final = self.helper.layer_outputs(reference, wave)
        return [blocks[lv - 1] for lv in c.levels], final.mean(1)


def _status_mib(field: str) -> float:
    """A field of /proc/self/status in MiB (Linux). VmHWM, the peak RSS, starts anew at exec; getrusage's
    ru_maxrss would carry the (larger) peak of the benchmark process that started this one."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _probe(pair: Pair, side: str, batch: int, seconds: float, threads: int) -> int:
    """Print the peak RSS (MiB) above the imported baseline of building `side` and encoding the batch once."""
    from encoder import waveforms

    torch.set_num_threads(threads)
    base = _status_mib("VmRSS")
    wave = waveforms(batch, seconds, rate=pair.config.sample_rate)
    model = pair.build_one(side)
    with torch.no_grad():
        pair.reference_call(model)(wave) if side == "reference" else model(wave)
    print(_status_mib("VmHWM") - base)
    return 0


def peak_memory(encoder: str, side: str, batch: int, seconds: float, threads: int) -> float:
    out = subprocess.run([sys.executable, str(HERE / "encoder.py"), "--encoder", encoder, "--memory-probe", side,
                          "--batch", str(batch), "--seconds", str(seconds), "--threads", str(threads)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def cpu_times(runs: dict[str, Any], rounds: int) -> dict[str, list[float]]:
    """CPU seconds of this process per call (time.process_time), in the interleaved rounds of
    `encoder.time_side_by_side`: on a machine shared with other jobs, wall time mostly measures the share of
    the cores this process got, CPU time the work it did."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.process_time()
            run()
            times[name].append(time.process_time() - start)
    return times


def _precisions(device: torch.device) -> list[tuple[str, torch.dtype | None]]:
    """fp32, and the autocast precisions the device runs natively (CUDA: bf16, fp16; CPU: bf16 with oneDNN's)."""
    if device.type == "cuda":
        return [("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return [("fp32", None), ("bf16", torch.bfloat16)]
    return [("fp32", None)]


@contextlib.contextmanager
def _no_tf32():
    """Exact fp32 on CUDA while the outputs are compared (cuDNN convolutions default to TF32)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _differences(pair: Pair, reference: torch.nn.Module, ours: torch.nn.Module, wave: torch.Tensor,
                 precisions: list[tuple[str, torch.dtype | None]]) -> dict[str, Any]:
    """max |hade - reference| per level and on the clip vector (fp32), and hade's low precisions vs its fp32."""
    with torch.no_grad(), _no_tf32():
        expected, clip = pair.reference_levels(reference, wave)
        got = ours(wave)
    diffs: dict[str, Any] = {"levels": [float((tokens - ref).abs().max()) for tokens, ref in zip(got.stages, expected)],
                             "pooled": float((got.pooled - clip).abs().max())}
    for label, amp in precisions[1:]:
        with torch.no_grad(), torch.autocast(wave.device.type, dtype=amp):
            diffs[f"pooled_{label}_vs_fp32"] = float((ours(wave).pooled.float() - got.pooled).abs().max())
    return diffs


def cuda_peaks(pair: Pair, reference: torch.nn.Module, ours: torch.nn.Module, wave: torch.Tensor) -> dict[str, float]:
    """Peak CUDA memory (MiB) of one fp32 batch per side, above what was allocated before the call."""
    calls = {"reference": lambda: pair.reference_call(reference)(wave), "hade": lambda: ours(wave)}
    peaks = {}
    for side, call in calls.items():
        torch.cuda.synchronize(wave.device)
        before = torch.cuda.memory_allocated(wave.device)
        torch.cuda.reset_peak_memory_stats(wave.device)
        with torch.no_grad():
            call()
        torch.cuda.synchronize(wave.device)
        peaks[side] = (torch.cuda.max_memory_allocated(wave.device) - before) / 2**20
    return peaks


def measure_pair(pair: Pair, batch: int, seconds: float, rounds: int, threads: int,
                 memory: bool = True, device: str = "cpu") -> dict[str, Any]:
    from encoder import _runner, time_side_by_side, waveforms

    torch.set_num_threads(threads)
    dev = torch.device(device)
    reference, ours = (m.to(dev) for m in pair.build())
    wave = waveforms(batch, seconds, rate=pair.config.sample_rate).to(dev)
    precisions = _precisions(dev)
    diffs = _differences(pair, reference, ours, wave, precisions)
    runs = {}
    for label, amp in precisions:
        runs[f"reference {label}"] = _runner(pair.reference_call(reference), wave, False, amp)
        runs[f"hade {label}"] = _runner(lambda x: ours(x).pooled, wave, False, amp)
    times = time_side_by_side(runs, rounds, dev)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    rows = [{"precision": label, "reference_clips_s": batch / median[f"reference {label}"],
             "hade_clips_s": batch / median[f"hade {label}"],
             "ratio": median[f"reference {label}"] / median[f"hade {label}"]} for label, _ in precisions]
    if dev.type == "cpu":
        cpu = {name: statistics.median(ts) for name, ts in cpu_times(runs, rounds).items()}
        for row in rows:
            ref_s, our_s = cpu[f"reference {row['precision']}"], cpu[f"hade {row['precision']}"]
            row.update(reference_cpu_s_per_clip=ref_s / batch, hade_cpu_s_per_clip=our_s / batch,
                       cpu_ratio=ref_s / our_s)
    mem = ({side: peak_memory(pair.encoder, side, batch, seconds, threads) for side in ("reference", "hade")}
           if memory and dev.type == "cpu" and pair.preset == DEFAULT_PRESETS[pair.encoder] else {})
    return {"encoder": pair.preset, "reference": pair.reference_name, "device": str(dev), "threads": threads,
            "batch": batch, "seconds": seconds, "rounds": rounds, "max_diff": diffs, "rows": rows,
            "peak_rss_mib": mem, "peak_cuda_mib": cuda_peaks(pair, reference, ours, wave) if dev.type == "cuda" else {},
            "times_s": times}


def report_pair(result: dict[str, Any]) -> str:
    d, ref = result["max_diff"], result["reference"]
    low = "".join(f"; hade {k.split('_')[1]} vs fp32 (clip vector) {v:.2g}" for k, v in d.items()
                  if k.startswith("pooled_") and k.endswith("_vs_fp32"))
    cpu = "cpu_ratio" in result["rows"][0]
    lines = [f"{result['encoder']}, {result['batch']} × {result['seconds']:g} s clips, forward (no_grad), "
             f"{result.get('device', 'cpu')}, {result['threads']} threads, median of {result['rounds']} interleaved rounds",
             "max |hade - " + ref + "|: levels " + ", ".join(f"{v:.2g}" for v in d["levels"])
             + f"; clip vector {d['pooled']:.2g}" + low,
             f"{'precision':<10} {'reference clips/s':>18} {'hade clips/s':>13} {'ratio':>7}"
             + (f"   {'reference CPU s/clip':>21} {'hade CPU s/clip':>16} {'ratio':>7}" if cpu else "")]
    lines += [f"{r['precision']:<10} {r['reference_clips_s']:>18.3f} {r['hade_clips_s']:>13.3f} {r['ratio']:>6.2f}×"
              + (f"   {r['reference_cpu_s_per_clip']:>21.2f} {r['hade_cpu_s_per_clip']:>16.2f} {r['cpu_ratio']:>6.2f}×"
                 if cpu else "")
              for r in result["rows"]]
    if result.get("peak_cuda_mib"):
        m = result["peak_cuda_mib"]
        lines.append(f"peak CUDA memory of one fp32 batch: {ref} {m['reference']:.0f} MiB, hade {m['hade']:.0f} MiB")
    if result["peak_rss_mib"]:
        m = result["peak_rss_mib"]
        lines.append(f"peak RSS above import (build + one batch): {ref} {m['reference']:.0f} MiB, "
                     f"hade {m['hade']:.0f} MiB")
    return "\n".join(lines)


def _main_float64(pair: Pair, args: argparse.Namespace, threads: int) -> int:
    """Exit 1 when hade's float32 run is further from the exact result than the reference's by more than a
    quarter, at a level where it is also over --tol."""
    try:
        result = float64_errors(pair, args.batch, args.seconds, threads)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else report_float64(result))
    worse = [r for r in result["rows"] if r["hade_fp32"] > max(args.tol, 1.25 * r["reference_fp32"])]
    if worse:
        print(f"FAIL: hade's float32 is further from float64 than {pair.reference_name}'s at "
              + ", ".join(str(r["level"]) for r in worse), file=sys.stderr)
        return 1
    return 0


def main_vit(args: argparse.Namespace) -> int:
    threads = args.threads or torch.get_num_threads()
    pair = Pair(args.encoder)
    if args.memory_probe:
        return _probe(pair, args.memory_probe, args.batch, args.seconds, threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        "cpu" if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    if args.seconds * pair.config.sample_rate > pair.config.max_samples:
        print(f"error: --encoder {args.encoder} takes clips of at most "
              f"{pair.config.max_samples / pair.config.sample_rate:g} s", file=sys.stderr)
        return 2
    if not pair.helper.available():
        print(f"error: the {pair.reference_name} reference is not installed (make install)", file=sys.stderr)
        return 2
    if args.against_fp64:
        return _main_float64(pair, args, threads)
    result = measure_pair(pair, args.batch, args.seconds, args.rounds, threads, device=device)
    print(json.dumps(result, indent=2) if args.json else report_pair(result))
    worst = max(result["max_diff"]["levels"] + [result["max_diff"]["pooled"]])
    if worst > args.tol:
        print(f"FAIL: outputs differ by {worst:.3g} > {args.tol:g}", file=sys.stderr)
        return 1
    return 0


def float64_errors(pair: Pair, batch: int, seconds: float, threads: int) -> dict[str, Any]:
    """How far each float32 implementation is from the exact result: max |fp32 - fp64| per level and on the
    clip vector, with hade's float64 run (float64 from the waveform on) as the exact result. Shows whether a
    difference between the two float32 runs is a mistake or float32 rounding that no implementation avoids."""
    import copy

    from encoder import waveforms

    if not hasattr(pair.helper, "as_float64"):
        raise ValueError(f"--against-fp64: the {pair.reference_name} reference cannot run in float64")
    torch.set_num_threads(threads)
    reference, ours = pair.build()
    wave = waveforms(batch, seconds, rate=pair.config.sample_rate)
    with torch.no_grad():
        ref32, ref32_clip = pair.reference_levels(reference, wave)
        got32 = ours(wave)
        ref64, ref64_clip = pair.reference_levels(pair.helper.as_float64(copy.deepcopy(reference)), wave.double())
        exact = copy.deepcopy(ours).double()(wave.double())

    def err(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.double() - b).abs().max())

    levels = [{"level": lv, "reference_fp32": err(r, e), "hade_fp32": err(h, e), "hade_vs_reference_fp32": err(h, r),
               "reference_fp64": err(r64, e)}
              for lv, r, h, r64, e in zip(pair.config.levels, ref32, got32.stages, ref64, exact.stages)]
    clip = {"level": "clip", "reference_fp32": err(ref32_clip, exact.pooled), "hade_fp32": err(got32.pooled, exact.pooled),
            "hade_vs_reference_fp32": err(got32.pooled, ref32_clip), "reference_fp64": err(ref64_clip, exact.pooled)}
    return {"encoder": pair.preset, "reference": pair.reference_name, "batch": batch, "seconds": seconds,
            "rows": levels + [clip]}


def report_float64(result: dict[str, Any]) -> str:
    ref = result["reference"]
    lines = [f"{result['encoder']}, {result['batch']} × {result['seconds']:g} s clips, random weights: max |x - exact| "
             "with hade's float64 run as the exact result",
             f"{'level':<7} {ref + ' fp32':>18} {'hade fp32':>10} {'hade - ' + ref + ' (fp32)':>28} {ref + ' fp64':>18}"]
    lines += [f"{str(r['level']):<7} {r['reference_fp32']:>18.2e} {r['hade_fp32']:>10.2e} "
              f"{r['hade_vs_reference_fp32']:>28.2e} {r['reference_fp64']:>18.2e}" for r in result["rows"]]
    return "\n".join(lines)
