#!/usr/bin/env python3
"""A Hugging Face ClapModel folder converted by hade against transformers' ClapModel, at full size.

    .venv/bin/python benchmarks/hf_clap.py [--audio tiny|base] [--text-layers 12] [--seconds 3] [--threads 1]
                                           [--json]

Builds ``transformers.ClapModel`` with laion/clap-htsat-unfused's geometry (`--audio tiny`: HTSAT-tiny, 96
wide, depths 2-2-6-2; `--audio base`: 128 wide, depths 2-2-12-2 as laion/larger_clap_*), a RoBERTa text tower
with roberta-base's blocks (`--text-layers` of them, random weights, a 268-token byte-level BPE instead of
roberta-base's vocabulary) and 512-d projections; LayerNorms, the input BatchNorm's statistics and the
attention bias tables are moved away from their initial values. It is saved with save_pretrained together
with a ``ClapFeatureExtractor`` with LAION's front end (48 kHz, hop 480, window 1024, 64 mels, 50-14 000 Hz,
10 s, ``truncation="rand_trunc"``, ``padding="repeatpad"``), converted by ``hade.models.convert_hf``, and
both models embed the same inputs in fp32. Printed, as max |hade - transformers|:
  * text: three captions through each side's tokenizer and text tower (normalised 512-d embeddings);
  * audio, same features: the extractor's ``input_features`` of two 10 s clips into both audio encoders;
  * log-mel: hade's LogMel against the extractor's ``input_features`` for the same 10 s clips (dB);
  * end to end, 10 s clips: each side from the waveform with its own front end;
  * end to end, `--seconds` clips: transformers repeat-pads them to 10 s; hade embeds them
    ``fit_length(pad="repeat")``-ed (as transformers) and zero-padded (as hade's index pads a short file).
Exits 1 when a difference other than the zero-padded row exceeds --tol (1e-3).

Measured (this 2-core Xeon, torch 2.13 CPU, transformers 5.25, 1 thread, seed 0, `--seconds 3`):
  --audio tiny: text 7.5e-8, audio same features 6e-8, log-mel 6.5e-5 dB, end to end 10 s 4.5e-8,
    3 s repeat-padded 5.2e-8, 3 s zero-padded 0.14;
  --audio base: text 6e-8, audio same features 5.2e-8, log-mel 6.5e-5 dB, end to end 10 s 5.2e-8,
    3 s repeat-padded 5.6e-8, 3 s zero-padded 0.14.
So the two front ends agree to float32 rounding (no mel option was needed: rand_trunc's Slaney filterbank,
power spectrogram and 10*log10 without top_db are hade's LogMel); only the padding of short clips differs.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _laion_reference as ref  # noqa: E402

from hade.data.audio import fit_length  # noqa: E402
from hade.models.convert_hf import convert_hf_clap  # noqa: E402

RATE = 48000
AUDIO = {"tiny": dict(patch_embeds_hidden_size=96, depths=[2, 2, 6, 2], hidden_size=768),
         "base": dict(patch_embeds_hidden_size=128, depths=[2, 2, 12, 2], hidden_size=1024)}
CAPTIONS = ["a dog barks", "bar dog ks in the bar", "x"]
FRONT_END = dict(feature_size=64, sampling_rate=RATE, hop_length=480, fft_window_size=1024, max_length_s=10,
                 frequency_min=50, frequency_max=14000, truncation="rand_trunc", padding="repeatpad")


def write_folder(folder: Path, audio: str, text_layers: int, seed: int):
    """The random full-size ClapModel saved as a hub folder; -> the transformers model (eval)."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    torch.manual_seed(seed)
    config = ClapConfig(text_config=dict(vocab_size=268, num_hidden_layers=text_layers, layer_norm_eps=1e-5),
                        audio_config=dict(AUDIO[audio], num_attention_heads=[4, 8, 16, 32]), projection_dim=512)
    model = ClapModel(config).eval()
    with torch.no_grad():
        ref.perturb_norms(model, model.audio_model.audio_encoder.batch_norm)
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0.0, 0.5)
    model.save_pretrained(str(folder))
    ref.write_tiny_roberta_tokenizer(folder)
    ClapFeatureExtractor(**FRONT_END).save_pretrained(str(folder))
    return model


def waves(seconds: float, batch: int = 2) -> np.ndarray:
    g = torch.Generator().manual_seed(3)
    n = int(seconds * RATE)
    t = torch.arange(n) / RATE
    tone = 0.3 * torch.sin(2 * torch.pi * 440.0 * t) + 0.2 * torch.sin(2 * torch.pi * 1500.0 * t * (1 + t))
    return torch.stack([tone * (i + 1) / batch + 0.05 * torch.randn(n, generator=g) for i in range(batch)]).numpy()


@torch.no_grad()
def measure(folder: Path, reference, seconds: float) -> dict[str, float]:
    from transformers import ClapFeatureExtractor

    model, _ = convert_hf_clap(folder)
    extractor = ClapFeatureExtractor.from_pretrained(str(folder))

    def hf_audio(batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        features = extractor(list(batch), sampling_rate=RATE, return_tensors="pt")["input_features"].float()
        return reference.get_audio_features(input_features=features).pooler_output, features

    def ours(batch: np.ndarray) -> torch.Tensor:
        return model.encode_audio(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))["embed"]

    tokens = model.tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    out = {"text": (model.encode_text(CAPTIONS)["embed"]
                    - reference.get_text_features(**tokens).pooler_output).abs().max().item()}
    full = waves(10.0)
    theirs, features = hf_audio(full)
    same = model.head.audio_repr(model.audio_encoder.forward_logmel(features))["embed"]
    out["audio_same_features"] = (same - theirs).abs().max().item()
    out["logmel_db"] = (model.audio_encoder.logmel(torch.from_numpy(full).float()) - features).abs().max().item()
    out["end_to_end_10s"] = (ours(full) - theirs).abs().max().item()
    short = waves(seconds)
    theirs_short, _ = hf_audio(short)
    n = model.clip_samples
    out[f"end_to_end_{seconds:g}s_repeat_padded"] = (
        ours(np.stack([fit_length(w, n, pad="repeat") for w in short])) - theirs_short).abs().max().item()
    out[f"end_to_end_{seconds:g}s_zero_padded"] = (
        ours(np.stack([fit_length(w, n) for w in short])) - theirs_short).abs().max().item()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--audio", choices=sorted(AUDIO), default="tiny")
    p.add_argument("--text-layers", type=int, default=12)
    p.add_argument("--seconds", type=float, default=3.0, help="length of the short clips (< 10 s)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / f"clap-htsat-{args.audio}-random"
        reference = write_folder(folder, args.audio, args.text_layers, args.seed)
        result = measure(folder, reference, args.seconds)
    if args.json:
        print(json.dumps({"audio": args.audio, **result}, indent=2))
    else:
        for name, value in result.items():
            print(f"{name:32s} max |hade - transformers| = {value:.2g}")
    bad = {k: v for k, v in result.items() if not k.endswith("zero_padded") and k != "logmel_db" and v > args.tol}
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
