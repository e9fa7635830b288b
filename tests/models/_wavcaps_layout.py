"""Test helper (loaded by path): checkpoints in WavCaps' ASE key layout.

WavCaps (XinhaoMei/WavCaps retrieval/models/ase_model.py) saves ``{"model": state, "config": settings}`` with
``audio_encoder.audio_enc.*`` (HTSAT; its torchlibrosa front end under ``audio_feats_extractor.*``),
``text_encoder.text_encoder.*`` (BertModel without pooler), ``audio_proj``/``text_proj`` (Linear-ReLU-Linear)
and ``temp``; the settings' ``audio_args`` name the front end.
"""
from __future__ import annotations

from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def audio_args(config) -> dict:
    """WavCaps settings' audio_args for an HTSATConfig."""
    return {"sr": config.sample_rate, "n_fft": config.n_fft, "hop_length": config.hop_length,
            "n_mels": config.mel_bins, "f_min": config.fmin, "f_max": config.fmax}


def wavcaps_checkpoint_from_hade(model, temp: float = 0.05) -> dict:
    """A hade `dp` model (BERT text encoder, cls pooling) written in WavCaps' layout, with torchlibrosa-style
    front-end tensors WavCaps would carry (dropped by the converter) and a DDP prefix."""
    renames = (("audio_encoder.", "audio_encoder.audio_enc."), ("text_encoder.bert.", "text_encoder.text_encoder."),
               ("head.audio_proj.", "audio_proj."), ("head.text_proj.", "text_proj."))
    state = {}
    for key, value in model.state_dict().items():
        new = next(t + key[len(s):] for s, t in renames if key.startswith(s))
        state[f"module.{new}"] = value.clone()
    cfg = model.audio_encoder.config
    n_freq = cfg.n_fft // 2 + 1
    front = "module.audio_encoder.audio_enc.audio_feats_extractor."
    state[front + "mel_trans.stft.conv_real.weight"] = torch.zeros(n_freq, 1, cfg.n_fft)
    state[front + "log_trans.melW"] = torch.zeros(n_freq, cfg.mel_bins)
    state["module.temp"] = torch.tensor(temp)
    return {"model": state, "epoch": 3, "config": {"audio_args": audio_args(cfg), "embed_size": model.config.embed_dim}}
