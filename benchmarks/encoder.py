#!/usr/bin/env python3
"""hade's HTSAT audio encoder against LAION-CLAP's reference HTSAT at the same configuration and inputs.

    .venv/bin/python benchmarks/encoder.py [--encoder htsat|passt|beats] [--batch 4] [--seconds 10] [--rounds 5] [--threads 2]
                                           [--device cpu|cuda|auto] [--backward] [--compile] [--json]
                                           [--text [--text-batch 32] [--text-layers 12]]

Both models are HTSAT-tiny with LAION-CLAP's 48 kHz front end; the reference gets seeded random weights
(random BatchNorm statistics and LayerNorm affines too) and hade's encoder loads them through the
LAION-CLAP key map, as `hade convert` does. One process, the same thread count, the same waveforms:
  * equality: max |ours - reference| per Swin stage and on the pooled latent (fp32);
  * speed: `--rounds` rounds, each times the reference then hade on the same batch (after a warm-up
    call each); clips/s is the batch over the median time, and the ratio is hade / reference.
    The reference is timed as users call it (``model({"waveform": x})``), which also runs its TSCAM
    tagging head; that head is one conv + pooling (1.1 % of its 14.1 GFLOP per 10 s clip), so it does not
    account for the ratio. `--backward` times forward + backward of the pooled output's sum instead.
  * `--compile` adds a row for ``torch.compile(hade)`` (compile time reported separately);
  * bf16 autocast rows for both models on CPUs with native bf16 (oneDNN: AVX512-BF16 / AMX), and bf16
    and fp16 rows on CUDA; each such row also gives hade's max |low precision - fp32| on the pooled output.
  * `--text` adds the text side: laion_clap's ``CLAP`` text tower (RoBERTa with roberta-base's blocks,
    `--text-layers`, random weights, a small byte-level BPE whose merges make each caption word one token,
    as roberta-base's mostly do) against the hade model `hade convert --tokenizer` makes of it, both from
    caption strings to normalised 512-d embeddings: LAION as CLAP_Module calls it (every caption padded to
    77 tokens), hade as it encodes text (padded to the batch's longest caption); max |difference| of the
    embeddings, captions/s and the ratio. Both run transformers' RobertaModel, so the ratio is the padding.
Exits 1 when the outputs differ by more than --tol (1e-4).
`--encoder passt` / `--encoder beats`: hade's PaSST-S against hear21passt, or hade's BEATs iter3 against ESPnet's
BEATs encoder, instead (benchmarks/_vit_rows.py; their figures are in docs/encoders.md).

Measured (this 2-core Xeon with AMX, torch 2.13 CPU, 10 s clips, batch 2-4; the machine was shared
with two training jobs, so clips/s vary and only the ratios, measured side by side, mean something):
  fp32 inference: 1.76-2.1× at 1 thread, 1.53-2.13× at 2 threads (lower when the cores are busier);
  max |difference| 2.4e-5 per stage, 1e-6 pooled. bf16 autocast: 1.47-1.62× the reference in bf16, and
  2.3× hade's own fp32 speed (pooled output within 0.02 of fp32). Forward + backward: ~1.0×.
  Where the time goes (torch profiler, 1 thread, 2 clips): hade 0.85 s = 57 % linear layers (addmm),
  15 % copies (window partition, shifts, head split), 7 % fused attention (SDPA); the reference 1.8 s =
  30 % addmm, 23 % bmm + 6 % softmax (unfused attention), 13 % its STFT/mel convolutions, 7 % gelu, 10 %
  copies. `--compile` (inductor, 1 thread): 2.05× against eager hade's 1.91× in the same run, after 156 s
  of compilation, so hade does not compile by default.
  Text row (`--text`, 12 RoBERTa blocks, 32 captions of 8-25 tokens, 2 threads, 5 rounds): 1.81 captions/s
  for laion_clap, 4.11 for hade, 2.27×, max |difference| 1.3e-7: the same transformers RobertaModel, with
  hade padding to the longest caption instead of 77 tokens (with 77-token captions the two are equal).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

if str(Path(__file__).resolve().parent) not in sys.path:  # the helper beside this script, also when loaded by path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from _laion_reference import (  # noqa: E402
    ReferenceUnavailable,
    clap_state_dict,
    clap_text_embedding,
    hade_from_reference,
    reference_clap,
    reference_tiny,
    run_reference,
    write_tiny_roberta_tokenizer,
)

SAMPLE_RATE = 48000
# the reference calls torch.meshgrid without `indexing` (a deprecation warning on every forward)
warnings.filterwarnings("ignore", message="torch.meshgrid")


def waveforms(batch: int, seconds: float, seed: int = 1, rate: int = SAMPLE_RATE) -> torch.Tensor:
    """[batch, seconds·rate] (48 kHz by default): a chirp plus a tone plus noise (non-trivial spectra), seeded."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * rate)
    t = torch.arange(n) / rate
    out = []
    for i in range(batch):
        f0 = 220.0 * (1 + i)
        clean = 0.3 * torch.sin(2 * torch.pi * f0 * t) + 0.2 * torch.sin(2 * torch.pi * 2000.0 * t * (1 + t / 4))
        out.append(clean + 0.05 * torch.randn(n, generator=g))
    return torch.stack(out)


def max_differences(reference: torch.nn.Module, ours: torch.nn.Module, wave: torch.Tensor) -> dict[str, Any]:
    """Max |difference| per stage and on the pooled latent, fp32, without gradients."""
    ref_stages, ref_pooled = run_reference(reference, wave)
    with torch.no_grad():
        got = ours(wave)
    stages = [float((a - b).abs().max()) for a, b in zip(got.stages, ref_stages)]
    return {"stages": stages, "pooled": float((got.pooled - ref_pooled).abs().max())}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _runner(fn: Callable[[torch.Tensor], torch.Tensor], wave: torch.Tensor, backward: bool,
            amp: torch.dtype | None) -> Callable[[], None]:
    def run() -> None:
        with torch.autocast(wave.device.type, dtype=amp, enabled=amp is not None):
            if backward:
                fn(wave).float().sum().backward()
            else:
                with torch.no_grad():
                    fn(wave)
    return run


def time_side_by_side(runs: dict[str, Callable[[], None]], rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per call for each named run: one warm-up call each, then `rounds` rounds of one call each
    in turn (interleaved, so a change in the machine's load hits every run alike)."""
    for run in runs.values():
        run()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            _sync(device)
            start = time.perf_counter()
            run()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def measure(batch: int = 4, seconds: float = 10.0, rounds: int = 5, threads: int | None = 2,
            device: str = "cpu", backward: bool = False, compile_ours: bool = False, seed: int = 0) -> dict[str, Any]:
    """Run the comparison; returns the differences, and per row clips/s of both models and the ratio."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    reference = reference_tiny(seed)
    ours, _ = hade_from_reference(reference)
    reference, ours = reference.to(dev), ours.to(dev)
    wave = waveforms(batch, seconds).to(dev)
    diffs = max_differences(reference, ours, wave)

    def ref_forward(x: torch.Tensor) -> torch.Tensor:
        return reference({"waveform": x}, device=x.device)["embedding"]

    def our_forward(x: torch.Tensor) -> torch.Tensor:
        return ours(x).pooled

    precisions: list[tuple[str, torch.dtype | None]] = [("fp32", None)]
    if dev.type == "cuda":
        precisions += [("bf16", torch.bfloat16), ("fp16", torch.float16)]
    elif torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        precisions.append(("bf16", torch.bfloat16))
    with torch.no_grad():
        exact = our_forward(wave)
        for label, amp in precisions[1:]:
            with torch.autocast(dev.type, dtype=amp):
                diffs[f"pooled_{label}_vs_fp32"] = float((our_forward(wave).float() - exact).abs().max())
    runs: dict[str, Callable[[], None]] = {}
    for label, amp in precisions:
        runs[f"reference {label}"] = _runner(ref_forward, wave, backward, amp)
        runs[f"hade {label}"] = _runner(our_forward, wave, backward, amp)
    compile_seconds = None
    if compile_ours:
        compiled = torch.compile(ours)
        start = time.perf_counter()
        _runner(lambda x: compiled(x).pooled, wave, backward, None)()  # compilation happens on the first call
        _sync(dev)
        compile_seconds = time.perf_counter() - start
        runs["hade fp32 compiled"] = _runner(lambda x: compiled(x).pooled, wave, backward, None)
    times = time_side_by_side(runs, rounds, dev)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    rows = []
    for label, _ in precisions:
        ref_t, our_t = median[f"reference {label}"], median[f"hade {label}"]
        rows.append({"precision": label, "reference_clips_s": batch / ref_t, "hade_clips_s": batch / our_t,
                     "ratio": ref_t / our_t})
    if compile_ours:
        ref_t, our_t = median["reference fp32"], median["hade fp32 compiled"]
        rows.append({"precision": "fp32 compiled", "reference_clips_s": batch / ref_t, "hade_clips_s": batch / our_t,
                     "ratio": ref_t / our_t, "compile_s": compile_seconds})
    return {"device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "batch": batch, "seconds": seconds, "rounds": rounds,
            "mode": "forward+backward" if backward else "forward (no_grad)", "max_diff": diffs, "rows": rows,
            "times_s": times}


CAPTIONS = ["a dog barks twice in the distance", "rain falls on a tin roof while thunder rumbles",
            "a car passes by", "birds chirp as a door creaks open and people talk quietly in a large hall",
            "an engine idles", "water drips into a metal sink", "footsteps on gravel followed by a cough",
            "a siren wails and fades away"]


def measure_text(batch: int = 32, rounds: int = 5, layers: int = 12, device: str = "cpu",
                 seed: int = 0) -> dict[str, Any]:
    """The text row: laion_clap's text tower against hade's converted one on `batch` captions (strings in,
    normalised embeddings out); equality and speed."""
    import tempfile

    from hade.models.convert_full import convert_full

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    words = " ".join(CAPTIONS).split()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = write_tiny_roberta_tokenizer(Path(tmp) / "tok", words)
        vocab = len(json.loads((tokenizer_dir / "vocab.json").read_text()))
        clap = reference_clap(seed, vocab_size=vocab,
                              text_overrides={"num_hidden_layers": layers, "intermediate_size": 3072})
        ours, _ = convert_full(clap_state_dict(clap), tokenizer_dir)
    clap, ours = clap.to(dev), ours.to(dev)
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
    with torch.no_grad():
        diff = float((ours.encode_text(captions)["embed"] - clap_text_embedding(clap, ours.tokenizer, captions).to(dev))
                     .abs().max())
    runs = {"reference": lambda: clap_text_embedding(clap, ours.tokenizer, captions),
            "hade": lambda: ours.encode_text(captions)}
    with torch.no_grad():
        times = time_side_by_side(runs, rounds, dev)
    ref_t, our_t = statistics.median(times["reference"]), statistics.median(times["hade"])
    return {"batch": batch, "layers": layers, "max_diff": diff, "reference_captions_s": batch / ref_t,
            "hade_captions_s": batch / our_t, "ratio": ref_t / our_t, "times_s": times}


def report_text(row: dict[str, Any]) -> str:
    return (f"text: RoBERTa ({row['layers']} blocks) + projection, {row['batch']} captions; max |hade - reference| "
            f"{row['max_diff']:.2g}\n{'text fp32':<14} {row['reference_captions_s']:>18.2f} "
            f"{row['hade_captions_s']:>13.2f} {row['ratio']:>6.2f}×  (captions/s)")


def report(result: dict[str, Any]) -> str:
    lines = [f"HTSAT-tiny (LAION front end, 48 kHz), {result['batch']} × {result['seconds']:g} s clips, "
             f"{result['mode']}, device {result['device_name']}, {result['threads']} threads, "
             f"median of {result['rounds']} interleaved rounds",
             "max |hade - reference|: stages " + ", ".join(f"{d:.2g}" for d in result["max_diff"]["stages"])
             + f"; pooled {result['max_diff']['pooled']:.2g}"
             + "".join(f"; hade {k.split('_')[1]} vs fp32 (pooled) {v:.2g}"
                       for k, v in result["max_diff"].items() if k.endswith("_vs_fp32")),
             f"{'precision':<14} {'reference clips/s':>18} {'hade clips/s':>13} {'ratio':>7}"]
    for row in result["rows"]:
        extra = f"  (compile {row['compile_s']:.0f} s)" if "compile_s" in row else ""
        lines.append(f"{row['precision']:<14} {row['reference_clips_s']:>18.2f} {row['hade_clips_s']:>13.2f} "
                     f"{row['ratio']:>6.2f}×{extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoder", default="htsat", choices=["htsat", "passt", "beats"],
                   help="htsat: hade vs LAION-CLAP's HTSAT; passt: hade's PaSST-S vs hear21passt; beats: hade's BEATs "
                        "iter3 vs ESPnet's (benchmarks/_vit_rows.py)")
    p.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: one side's peak RSS
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--backward", action="store_true", help="time forward + backward instead of inference")
    p.add_argument("--compile", action="store_true", help="also time torch.compile(hade encoder)")
    p.add_argument("--text", action="store_true", help="add the text-encoder row (RoBERTa, laion_clap vs hade)")
    p.add_argument("--text-batch", type=int, default=32, help="captions per text batch")
    p.add_argument("--text-layers", type=int, default=12, help="RoBERTa blocks of the text row (roberta-base: 12)")
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--json", action="store_true")
    p.add_argument("--against-fp64", action="store_true",
                   help="--encoder beats: each float32 run's distance from the exact (float64) result instead of timing")
    args = p.parse_args(argv)
    if args.encoder != "htsat" or args.memory_probe:
        from _vit_rows import main_vit

        return main_vit(args)
    if args.batch < 1 or args.rounds < 1 or args.seconds <= 0:
        p.error("--batch and --rounds must be >= 1 and --seconds > 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    try:
        result = measure(args.batch, args.seconds, args.rounds, args.threads or None, args.device,
                         args.backward, args.compile)
        if args.text:
            result["text"] = measure_text(args.text_batch, args.rounds, args.text_layers, args.device)
    except ReferenceUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = report(result) + ("\n" + report_text(result["text"]) if args.text else "")
    print(json.dumps(result, indent=2) if args.json else text)
    worst = max(result["max_diff"]["stages"] + [result["max_diff"]["pooled"]]
                + ([result["text"]["max_diff"]] if args.text else []))
    if worst > args.tol:
        print(f"FAIL: outputs differ by {worst:.3g} > {args.tol:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
