"""Compressed token store benchmark: bytes per window, ranking fidelity on real token features, codec timings.

1. Bytes per window of the stored token features, float16 against each codec, at the CPU model's
   shapes (256 + 64 + 16 tokens × 256 dims) and the paper's (1 024 + 256 + 64 tokens × 256 dims).
2. Fidelity on the SynthCaps evaluation split with a trained model (default: the demo's ``tha+dcr``
   copy in runs/demo-idx/model): every evaluation clip is encoded like an index window (first window,
   float16), its THA tokens are compressed with codecs fitted on the *development* split's tokens (no
   evaluation data in the fit), and every caption is scored against every clip with the model's head on
   decoded tokens and on the float16 originals. Printed per codec: overlap of the top 10 (full head
   score, and THA's part alone), T2A R@1 / R@10 of the full score, and the largest score change.
   Nothing is trained.
3. Timings, one thread: encoding a window's tokens, decoding 100 candidates from memory-mapped codes,
   and the head's score of one caption against those 100 windows (what decoding adds to a re-rank).

Codecs compared (``--codecs``, ';'-separated): faiss factory strings run through `TokenCodec` (direction
codes + float16 norm), and ``colbert<b>``: ColBERTv2's residual compression (unit vectors, 256 k-means
centroids, b bits per dimension of the residual with quantile buckets, float16 norm), in numpy here.

    python benchmarks/index_store.py --model runs/ablate/rows/tha_dcr/seed0/checkpoints/best   # ~3-4 min
    python benchmarks/index_store.py --codecs "IVF256,PQ32" --captions 1

Targets (issue #14): >= 8x smaller than float16; top-10 overlap >= 0.95; R@1, R@10 within 0.5 points.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from hade.data.audio import load_audio  # noqa: E402
from hade.index.tokens import TokenCodec, decode_rows, open_codes, save_codes, unit_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"cpu (htsat-cpu)": (256, 64, 16), "paper (htsat-tiny)": (1024, 256, 64)}
DIM = 256


class ColbertCodec:
    """ColBERTv2-style residual codec (for comparison): centroid id (2 bytes), b bits a dimension, norm."""

    def __init__(self, sample: np.ndarray, bits: int, centroids: int = 256, seed: int = 0) -> None:
        unit, norm = unit_rows(sample.reshape(-1, sample.shape[-1]))
        unit = unit[norm > 0]
        self.km = faiss.Kmeans(unit.shape[1], min(centroids, len(unit) // 39), niter=20, seed=seed, spherical=True)
        self.km.train(np.ascontiguousarray(unit))
        residual = unit - self.km.centroids[self.km.index.search(unit, 1)[1][:, 0]]
        self.cutoffs = np.quantile(residual, np.linspace(0, 1, 2 ** bits + 1)[1:-1])
        bucket = np.digitize(residual, self.cutoffs)
        self.values = np.array([residual[bucket == i].mean() for i in range(2 ** bits)], dtype=np.float32)
        self.code_bytes = 2 + unit.shape[1] * bits // 8 + 2

    def round_trip(self, tokens: np.ndarray) -> np.ndarray:
        """tokens [..., D] -> decoded tokens (codes are not packed into bytes here: only their size counts)."""
        unit, norm = unit_rows(tokens.reshape(-1, tokens.shape[-1]))
        centre = self.km.centroids[self.km.index.search(np.ascontiguousarray(unit), 1)[1][:, 0]]
        approx, _ = unit_rows(centre + self.values[np.digitize(unit - centre, self.cutoffs)])
        return (approx * norm.astype(np.float16).astype(np.float32)[:, None]).reshape(tokens.shape)


def first_windows(model, folder: Path, names: list[str], window: int) -> dict[str, np.ndarray]:
    """Encode the first `window` samples of each file (zero-padded) -> reprs {key: [F, ...] float16}."""
    out: dict[str, list[np.ndarray]] = {}
    for a in range(0, len(names), 8):
        batch = np.zeros((len(names[a:a + 8]), window), np.float32)
        for i, name in enumerate(names[a:a + 8]):
            wave = load_audio(folder / name, model.sample_rate)[:window]
            batch[i, :len(wave)] = wave
        with torch.inference_mode():
            reprs = model.encode_audio(torch.from_numpy(batch))
        for key, value in reprs.items():
            stored = value.to(torch.float16) if value.is_floating_point() else value
            out.setdefault(key, []).append(stored.numpy())
    return {key: np.concatenate(parts) for key, parts in out.items()}


def token_keys_of(reprs: dict[str, np.ndarray]) -> list[str]:
    return sorted(k for k, v in reprs.items() if v.ndim == 3 and v.shape[1] * v.shape[2] >= 4096)


def scores(model, text: dict[str, torch.Tensor], audio: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(full head score [T, A], THA part's score [T, A] or the full one when the head is not a sum)."""
    a = {k: torch.from_numpy(v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in audio.items()}
    with torch.inference_mode():
        full = model.head.score(text, a).numpy()
        parts = getattr(model.head, "parts", None)
        tha = parts["tha"].score(text, a).numpy() if parts is not None and "tha" in parts else full
    return full, tha


def overlap(s: np.ndarray, ref: np.ndarray, k: int = 10) -> float:
    a, b = np.argsort(-s, 1)[:, :k], np.argsort(-ref, 1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)]))


def recall(s: np.ndarray, truth: np.ndarray, k: int) -> float:
    top = np.argsort(-s, 1)[:, :k]
    return float(np.mean([truth[i] in top[i] for i in range(len(s))]))


def make_codec(spec: str, sample: np.ndarray):
    if spec.startswith("colbert"):
        return ColbertCodec(sample, int(spec[7:] or 1))
    return TokenCodec.fit(sample, spec)


def round_trip(codec, tokens: np.ndarray) -> np.ndarray:
    return codec.round_trip(tokens) if isinstance(codec, ColbertCodec) else codec.decode(codec.encode(tokens))


def fidelity(args: argparse.Namespace, model) -> list[dict]:
    """One row per codec (float16 first) on the evaluation split; codecs fitted on development tokens."""
    data = Path(args.data)
    rows_csv = list(csv.reader(open(data / "clotho_captions_evaluation.csv")))[1:]
    names = [r[0] for r in rows_csv]
    captions = [(c, i) for i, r in enumerate(rows_csv) for c in r[1:1 + args.captions]]
    window = min(model.clip_samples, 10 * model.sample_rate)
    t = time.perf_counter()
    ev = first_windows(model, data / "evaluation", names, window)
    dev_names = sorted(os.listdir(data / "development"))[:args.fit_clips]
    dev = first_windows(model, data / "development", dev_names, window)
    with torch.inference_mode():
        text = model.encode_text([c for c, _ in captions])
    truth = np.array([i for _, i in captions])
    print(f"# encoded {len(names)} evaluation + {len(dev_names)} development clips, {len(captions)} captions in "
          f"{time.perf_counter() - t:.0f} s", flush=True)
    keys = token_keys_of(ev)
    base, base_tha = scores(model, text, ev)
    rows = [{"codec": "float16", "bytes": 2 * DIM, "ov": 1.0, "ov_tha": 1.0, "r1": recall(base, truth, 1),
             "r10": recall(base, truth, 10), "dmax": 0.0, "dmean": 0.0, "tokcos": 1.0}]
    for spec in args.codecs.split(";"):
        t = time.perf_counter()
        codecs = {k: make_codec(spec, dev[k]) for k in keys}
        fit_s = time.perf_counter() - t
        audio = dict(ev)
        audio.update({k: round_trip(codecs[k], ev[k].astype(np.float32)) for k in keys})
        cos = np.mean([np.sum(unit_rows(audio[k].reshape(-1, DIM))[0] * unit_rows(ev[k].reshape(-1, DIM))[0], 1).mean()
                       for k in keys])
        full, tha = scores(model, text, audio)
        rows.append({"codec": spec, "bytes": codecs[keys[0]].code_bytes, "ov": overlap(full, base),
                     "ov_tha": overlap(tha, base_tha), "r1": recall(full, truth, 1), "r10": recall(full, truth, 10),
                     "dmax": float(np.abs(full - base).max()), "dmean": float(np.abs(full - base).mean()),
                     "tokcos": float(cos), "fit_s": fit_s, "codecs": codecs})
        print(f"  fitted {spec} in {fit_s:.0f} s", flush=True)
    rows[0]["spread"] = float(base.std())
    rows[0]["spread_tha"] = float(base_tha.std())
    rows[0]["ev"], rows[0]["text"] = ev, text
    return rows


def print_sizes(rows: list[dict]) -> None:
    print("\n## bytes per window (token features only; the pooled vectors add ~0.5-1 kB either way)")
    print(f"{'shapes':>20} {'tokens':>6} " + " ".join(f"{r['codec']:>15}" for r in rows))
    for name, levels in SHAPES.items():
        n = sum(levels)
        cells = " ".join(f"{n * r['bytes'] / 1000:>8.1f} kB {2 * DIM / r['bytes']:>3.0f}x" for r in rows)
        print(f"{name:>20} {n:>6} {cells}")


def print_fidelity(rows: list[dict]) -> None:
    base = rows[0]
    print(f"\n## fidelity vs float16 tokens (score spread: full {base['spread']:.4f}, "
          f"THA part {base['spread_tha']:.4f})")
    print(f"{'codec':>16} {'B/token':>7} {'x fp16':>6} {'tok cos':>7} {'top10 ov':>8} {'THA ov':>6} {'R@1':>6} "
          f"{'R@10':>6} {'max|ds|':>8} {'mean|ds|':>8}")
    for r in rows:
        print(f"{r['codec']:>16} {r['bytes']:>7} {2 * DIM / r['bytes']:>6.1f} {r['tokcos']:>7.4f} {r['ov']:>8.4f} "
              f"{r['ov_tha']:>6.3f} {100 * r['r1']:>6.2f} {100 * r['r10']:>6.2f} {r['dmax']:>8.5f} {r['dmean']:>8.5f}")


def timings(rows: list[dict], model, candidates: int) -> None:
    """Encode one window, decode `candidates` windows from memory-mapped codes, score one caption on them."""
    ev, text = rows[0]["ev"], rows[0]["text"]
    one = {k: v[:1] for k, v in text.items()}
    pick = np.arange(candidates) % len(next(iter(ev.values())))
    audio = {k: v[pick].astype(np.float32) if v.dtype == np.float16 else v[pick] for k, v in ev.items()}
    with torch.inference_mode():
        model.head.score(one, {k: torch.from_numpy(v) for k, v in audio.items()})
        t = time.thread_time()
        for _ in range(3):
            model.head.score(one, {k: torch.from_numpy(v) for k, v in audio.items()})
        score_ms = (time.thread_time() - t) / 3 * 1000
    print(f"\n## timings, CPU ms of 1 thread (a shared machine's wall clock adds waiting): head score of 1 "
          f"caption x {candidates} windows {score_ms:.1f} ms")
    for r in rows[1:]:
        codecs = r["codecs"]
        if not isinstance(next(iter(codecs.values())), TokenCodec):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            t = time.thread_time()
            codes = {k: c.encode(ev[k][pick].astype(np.float32)) for k, c in codecs.items()}
            enc_ms = (time.thread_time() - t) * 1000 / candidates
            for k, c in codes.items():
                save_codes(Path(tmp) / f"{k}.codes.npy", c)
            mapped = {k: open_codes(Path(tmp) / f"{k}.codes.npy") for k in codes}
            t = time.thread_time()
            for _ in range(3):
                for k, c in codecs.items():
                    decode_rows(c, mapped[k], np.arange(candidates))
            dec_ms = (time.thread_time() - t) * 1000 / 3
        print(f"{r['codec']:>16}: encode {enc_ms:.2f} ms a window; decode {candidates} windows from memmap "
              f"{dec_ms:.1f} ms ({dec_ms / score_ms * 100:.0f}% of their scoring); fitted in {r['fit_s']:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(ROOT / "runs/demo-idx/model"), help="trained checkpoint (tha+dcr demo)")
    p.add_argument("--data", default=str(ROOT / "runs/synthcaps"), help="SynthCaps folder (evaluation, development)")
    p.add_argument("--codecs", default="colbert1;colbert2;PQ32;IVF256,PQ32;IVF256,PQ64",
                   help="';'-separated faiss factory strings or colbert<bits>")
    p.add_argument("--captions", type=int, default=5, help="captions per evaluation clip used as queries")
    p.add_argument("--fit-clips", type=int, default=336, help="development clips whose tokens fit the codecs")
    p.add_argument("--candidates", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(1)  # one query at a time on a core; 2 threads on a shared machine spin-wait
    faiss.omp_set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import hade

    model = hade.load(args.model).eval()
    print(f"# index store benchmark: {args.model} (head {model.config.head}), {args.data}")
    t0 = time.perf_counter()
    rows = fidelity(args, model)
    print_sizes(rows)
    print_fidelity(rows)
    timings(rows, model, args.candidates)
    print(f"# total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
