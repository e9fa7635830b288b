"""Peak resident memory of `hade index` on one long file: 1 minute against 60 minutes.

Generates mono Opus WebM files (PyAV, 48 kHz; what a browser or a video site gives) and 16-bit WAV files
of `--minutes` each (a tone over noise), and indexes each alone in a fresh process with a tiny model (the
test preset: the encoder's own memory is small, so the decoding's shows) and its default window.
Printed: the process's peak RSS (``ru_maxrss`` of the child, from ``os.wait4``) and wall seconds.
`--src` runs another tree's `hade` (e.g. the main checkout before streaming decode) for comparison.

    python benchmarks/index_memory.py --out runs/index_memory [--minutes 1 60] [--src /path/to/other/src]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def make_files(out: Path, minutes: float) -> dict[str, Path]:
    """{kind: file} of `minutes` of audio as Opus WebM and as WAV (written once, block by block)."""
    import av
    import soundfile as sf

    files = {"webm": out / f"{minutes:g}min.webm", "wav": out / f"{minutes:g}min.wav"}
    sr, block = 48000, 48000 * 10
    rng = np.random.default_rng(0)
    total = int(minutes * 60 * sr)

    def blocks():
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / sr
            yield (0.1 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)

    if not files["wav"].is_file():
        with sf.SoundFile(files["wav"], "w", samplerate=16000, channels=1, subtype="PCM_16") as f:
            for b in blocks():
                f.write(b[::3])
    if not files["webm"].is_file():
        with av.open(str(files["webm"]), "w", format="webm") as container:
            stream = container.add_stream("libopus", rate=sr, layout="mono")
            resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=sr,
                                          frame_size=stream.codec_context.frame_size)
            for b in blocks():
                frame = av.AudioFrame.from_ndarray(b[None], format="fltp", layout="mono")
                frame.sample_rate = sr
                for part in resampler.resample(frame):
                    for packet in stream.encode(part):
                        container.mux(packet)
            for part in [*resampler.resample(None), None]:
                for packet in stream.encode(part):
                    container.mux(packet)
    return files


def make_ckpt(path: Path) -> Path:
    import torch

    import hade
    from hade.checkpoint import save_model
    from hade.config import ModelConfig

    if (path / "model.safetensors").is_file():
        return path
    torch.manual_seed(0)
    cfg = ModelConfig(audio_encoder="htsat-test", text_encoder="minilm", text_pretrained=False,
                      text_overrides={"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
                                      "intermediate_size": 64}, embed_dim=32, max_text_tokens=24)
    save_model(hade.create_model(dataclasses.replace(cfg, head="dp", text_config=None)), path)
    return path


def index_peak(file: Path, ckpt: Path, out: Path, src: Path) -> dict:
    """Index `file` alone (a folder holding only it) in a fresh process: peak RSS (MiB) and seconds."""
    folder = out / f"folder-{file.stem}-{file.suffix[1:]}"
    folder.mkdir(exist_ok=True)
    link = folder / file.name
    if not link.exists():
        os.link(file, link)
    idx = out / f"idx-{file.stem}-{file.suffix[1:]}-{abs(hash(str(src))) % 10**6}"
    subprocess.run(["rm", "-rf", str(idx)], check=True)
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", "import sys; from hade.cli import main; sys.exit(main(sys.argv[1:]))", "index",
           str(folder), "--ckpt", str(ckpt), "--out", str(idx), "--json"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    stats = json.loads(stdout) if os.waitstatus_to_exitcode(status) == 0 else {}
    return {"file": file.name, "mib": round(file.stat().st_size / 2**20, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024),
            "seconds": round(seconds, 1), "windows": stats.get("windows"), "exit": os.waitstatus_to_exitcode(status)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "index_memory")
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 60])
    p.add_argument("--src", type=Path, default=ROOT / "src", help="the tree whose `hade index` runs")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = make_ckpt(args.out / "ckpt")
    rows = []
    for minutes in args.minutes:
        for kind, file in make_files(args.out, minutes).items():
            row = {"src": str(args.src), "minutes": minutes, "kind": kind, **index_peak(file, ckpt, args.out, args.src)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'file':<14}{'MiB':>8}{'windows':>9}{'peak RSS MiB':>14}{'seconds':>9}   ({args.src})")
    for r in rows:
        print(f"{r['file']:<14}{r['mib']:>8}{str(r['windows']):>9}{r['peak_rss_mib']:>14}{r['seconds']:>9}")
    with open(args.out / "index_memory.json", "a") as f:
        f.write(json.dumps(rows) + "\n")


if __name__ == "__main__":
    main()
