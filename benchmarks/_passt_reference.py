"""The reference PaSST (``hear21passt``) next to hade's, with the same random weights (not part of hade).

Used by tests/models/encoders/test_passt_reference.py (equality) and benchmarks/encoder.py (speed). The
reference is hear21passt's own ``AugmentMelSTFT`` (eval mode) and ``PaSST`` classes, built with the
config's sizes; its state dict goes into hade's encoder through hade's explicit key map
(`hade.models.convert_audio.map_passt`).
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference_shims import load_kaldi, reference_imports  # noqa: E402


def available() -> bool:
    """True when hear21passt and the torchaudio reference wheel are installed (`make install`)."""
    if importlib.util.find_spec("hear21passt") is None:
        return False
    return load_kaldi() is not None


class ReferencePaSST(nn.Module):
    """hear21passt's mel front end and transformer: waveform [B, T] -> (logits, clip vector)."""

    def __init__(self, mel: nn.Module, net: nn.Module) -> None:
        super().__init__()
        self.mel, self.net = mel, net

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(self.mel(waveform).unsqueeze(1))


def build_reference(config: Any, num_classes: int = 527) -> ReferencePaSST:
    """hear21passt's modules with the sizes of a hade `PaSSTConfig` (random weights, eval mode)."""
    with reference_imports():
        from hear21passt.models import passt as ref_passt
        from hear21passt.models.preprocess import AugmentMelSTFT

    ref_passt.first_RUN = False  # its debug prints
    c = config
    mel = AugmentMelSTFT(n_mels=c.mel_bins, sr=c.sample_rate, win_length=c.win_length, hopsize=c.hop_length,
                         n_fft=c.n_fft, freqm=0, timem=0, fmin=c.fmin, fmax=c.fmax)
    img_tdim = c.time_patches * c.stride  # its grid size is img_size // stride
    net = ref_passt.PaSST(img_size=(c.mel_bins, img_tdim), patch_size=c.patch_size, stride=c.stride, in_chans=1,
                          num_classes=num_classes, embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads,
                          mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias, distilled=True)
    return ReferencePaSST(mel, net).eval()


def block_outputs(ref: ReferencePaSST, waveform: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor,
                                                                         torch.Tensor]:
    """(every block's output [B, 2 + M, C], the final LayerNorm's output, the clip vector) of the reference."""
    outs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in ref.net.blocks]
    normed: list[torch.Tensor] = []
    hooks.append(ref.net.norm.register_forward_hook(lambda m, i, o: normed.append(o)))
    try:
        _, clip = ref(waveform)
    finally:
        for h in hooks:
            h.remove()
    return outs, normed[0], clip


def hade_pair(config: Any, seed: int = 0) -> tuple[ReferencePaSST, nn.Module]:
    """(reference, hade encoder) with the reference's random weights loaded through hade's key map."""
    from hade.models.convert_audio import load_audio_state_dict
    from hade.models.encoders.passt import PaSSTEncoder

    torch.manual_seed(seed)
    ref = build_reference(config)
    ours = PaSSTEncoder(config).eval()
    report = load_audio_state_dict(ours, ref.net.state_dict(), kind="passt")
    if not report.complete:
        raise RuntimeError(f"key map incomplete: missing {report.missing[:5]}, mismatched {report.mismatched}")
    return ref, ours
