"""`benchmarks/encoder.py --encoder passt`: hade's PaSST-S against hear21passt (not part of hade).

Both models are PaSST-S (32 kHz, 128 mel bins, 12 blocks of 768) with the reference's seeded random weights,
loaded into hade's encoder through its key map; the same batch of `--seconds` clips (at most 10 s, one
segment). Rows: max |hade - reference| per level (blocks 4/8/12, patch tokens) and on the clip vector (fp32);
clips/s of both in fp32 and, on CPUs with native bf16, under bf16 autocast (interleaved rounds, median);
peak memory: the peak RSS of a fresh process that builds one model and encodes the batch once, above that
process's RSS after importing torch (`--memory-probe`, run once per side).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent


def _config(levels: list[int] | None = None) -> Any:
    from hade.models.encoders.passt import PaSSTConfig

    return PaSSTConfig(levels=levels or [4, 8, 12])


def _status_mib(field: str) -> float:
    """A field of /proc/self/status in MiB (Linux). VmHWM, the peak RSS, starts anew at exec; getrusage's
    ru_maxrss would carry the (larger) peak of the benchmark process that started this one."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _probe(side: str, batch: int, seconds: float, threads: int) -> int:
    """Print the peak RSS (MiB) above the imported baseline of building `side` and encoding the batch once."""
    from _passt_reference import build_reference
    from encoder import waveforms

    from hade.models.encoders.passt import PaSSTEncoder

    torch.set_num_threads(threads)
    base = _status_mib("VmRSS")
    wave = waveforms(batch, seconds, rate=32000)
    model = build_reference(_config()) if side == "reference" else PaSSTEncoder(_config()).eval()
    with torch.no_grad():
        model(wave)
    print(_status_mib("VmHWM") - base)
    return 0


def peak_memory(side: str, batch: int, seconds: float, threads: int) -> float:
    out = subprocess.run([sys.executable, str(HERE / "encoder.py"), "--encoder", "passt", "--memory-probe", side,
                          "--batch", str(batch), "--seconds", str(seconds), "--threads", str(threads)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure_passt(batch: int, seconds: float, rounds: int, threads: int, memory: bool = True) -> dict[str, Any]:
    from _passt_reference import block_outputs, hade_pair
    from encoder import _runner, time_side_by_side, waveforms

    torch.set_num_threads(threads)
    cfg = _config()
    reference, ours = hade_pair(cfg)
    wave = waveforms(batch, seconds, rate=cfg.sample_rate)
    with torch.no_grad():
        blocks, normed, clip = block_outputs(reference, wave)
        got = ours(wave)
    levels = [float((tokens - (normed if lv == cfg.depth else blocks[lv - 1])[:, 2:]).abs().max())
              for lv, tokens in zip(cfg.levels, got.stages)]
    diffs: dict[str, Any] = {"levels": levels, "pooled": float((got.pooled - clip).abs().max())}
    precisions: list[tuple[str, torch.dtype | None]] = [("fp32", None)]
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        precisions.append(("bf16", torch.bfloat16))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            diffs["pooled_bf16_vs_fp32"] = float((ours(wave).pooled.float() - got.pooled).abs().max())
    runs = {}
    for label, amp in precisions:
        runs[f"reference {label}"] = _runner(lambda x: reference(x)[1], wave, False, amp)
        runs[f"hade {label}"] = _runner(lambda x: ours(x).pooled, wave, False, amp)
    times = time_side_by_side(runs, rounds, torch.device("cpu"))
    median = {name: statistics.median(ts) for name, ts in times.items()}
    rows = [{"precision": label, "reference_clips_s": batch / median[f"reference {label}"],
             "hade_clips_s": batch / median[f"hade {label}"],
             "ratio": median[f"reference {label}"] / median[f"hade {label}"]} for label, _ in precisions]
    mem = ({side: peak_memory(side, batch, seconds, threads) for side in ("reference", "hade")} if memory else {})
    return {"encoder": "passt-s", "threads": threads, "batch": batch, "seconds": seconds, "rounds": rounds,
            "max_diff": diffs, "rows": rows, "peak_rss_mib": mem, "times_s": times}


def report_passt(result: dict[str, Any]) -> str:
    d = result["max_diff"]
    lines = [f"PaSST-S (32 kHz, 12 blocks of 768), {result['batch']} × {result['seconds']:g} s clips, forward "
             f"(no_grad), cpu, {result['threads']} threads, median of {result['rounds']} interleaved rounds",
             "max |hade - hear21passt|: blocks 4/8/12 " + ", ".join(f"{v:.2g}" for v in d["levels"])
             + f"; clip vector {d['pooled']:.2g}"
             + (f"; hade bf16 vs fp32 (clip vector) {d['pooled_bf16_vs_fp32']:.2g}" if "pooled_bf16_vs_fp32" in d
                else ""),
             f"{'precision':<14} {'hear21passt clips/s':>20} {'hade clips/s':>13} {'ratio':>7}"]
    lines += [f"{r['precision']:<14} {r['reference_clips_s']:>20.2f} {r['hade_clips_s']:>13.2f} {r['ratio']:>6.2f}×"
              for r in result["rows"]]
    if result["peak_rss_mib"]:
        m = result["peak_rss_mib"]
        lines.append(f"peak RSS above import (build + one batch): hear21passt {m['reference']:.0f} MiB, "
                     f"hade {m['hade']:.0f} MiB")
    return "\n".join(lines)


def main_vit(args: argparse.Namespace) -> int:
    threads = args.threads or torch.get_num_threads()
    if args.memory_probe:
        return _probe(args.memory_probe, args.batch, args.seconds, threads)
    if args.seconds > 10 or args.device != "cpu":
        print("error: --encoder passt takes clips of at most 10 s (one segment) on the cpu", file=sys.stderr)
        return 2
    from _passt_reference import available

    if not available():
        print("error: hear21passt or the torchaudio reference wheel is not installed (make install)", file=sys.stderr)
        return 2
    result = measure_passt(args.batch, args.seconds, args.rounds, threads)
    print(json.dumps(result, indent=2) if args.json else report_passt(result))
    worst = max(result["max_diff"]["levels"] + [result["max_diff"]["pooled"]])
    if worst > args.tol:
        print(f"FAIL: outputs differ by {worst:.3g} > {args.tol:g}", file=sys.stderr)
        return 1
    return 0
