"""The reference BEATs (ESPnet's ``espnet2/asr/encoder/beats_encoder.py``) next to hade's, with the same random
weights (not part of hade).

ESPnet is installed without its ~100 dependencies into ``<venv>/reference-espnet`` (``pip --no-deps --target``,
with ``typeguard``, the one extra import its BEATs module needs); its Kaldi fbank comes from torchaudio's
reference file through benchmarks/_reference_shims.py. That folder is on ``sys.path`` only while the module is
imported. Used by tests/models/encoders/test_beats_reference.py.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference_shims import load_kaldi, reference_imports  # noqa: E402


def espnet_dir() -> Path:
    return Path(sys.prefix) / "reference-espnet"


def available() -> bool:
    """True when the ESPnet and torchaudio reference folders are installed (`make install`)."""
    return (espnet_dir() / "espnet2" / "asr" / "encoder" / "beats_encoder.py").is_file() and load_kaldi() is not None


def _module() -> Any:
    if "espnet2.asr.encoder.beats_encoder" not in sys.modules:
        sys.path.insert(0, str(espnet_dir()))
        try:
            with reference_imports():
                import espnet2.asr.encoder.beats_encoder  # noqa: F401
        finally:
            sys.path.remove(str(espnet_dir()))
    return sys.modules["espnet2.asr.encoder.beats_encoder"]


def build_reference(config: Any) -> nn.Module:
    """ESPnet's BeatsEncoder with the sizes of a hade `BEATsConfig` (random weights, eval mode)."""
    c = config
    cfg = {"input_patch_size": c.patch_size, "embed_dim": c.patch_dim, "conv_bias": False,
           "encoder_layers": c.depth, "encoder_embed_dim": c.embed_dim, "encoder_ffn_embed_dim": c.ffn_dim,
           "encoder_attention_heads": c.num_heads, "activation_fn": "gelu", "layer_norm_first": False,
           "deep_norm": c.deep_norm, "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
           "encoder_layerdrop": 0.0, "dropout_input": 0.0, "conv_pos": c.conv_pos, "conv_pos_groups": c.conv_pos_groups,
           "relative_position_embedding": True, "num_buckets": c.num_buckets, "max_distance": c.max_distance,
           "gru_rel_pos": True}
    return _module().BeatsEncoder(input_size=1, beats_config=cfg).eval()


def layer_outputs(ref: nn.Module, waveform: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(every block's output [B, N, C], the encoder output [B, N, C]) of the reference for full-length clips."""
    outs: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outs.append(o[0].transpose(0, 1)))
             for layer in ref.encoder.layers]
    try:
        lengths = torch.full((waveform.shape[0],), waveform.shape[1], dtype=torch.long, device=waveform.device)
        final, _, _ = ref(waveform, lengths)
    finally:
        for h in hooks:
            h.remove()
    return outs, final


def hade_pair(config: Any, seed: int = 0) -> tuple[nn.Module, nn.Module, Any]:
    """(reference, hade encoder, conversion report) with the reference's weights loaded by hade's key map."""
    from hade.models.convert_audio import load_audio_state_dict
    from hade.models.encoders.beats import BEATsEncoder

    torch.manual_seed(seed)
    ref = build_reference(config)
    with torch.no_grad():  # non-trivial values where the reference initialises constants
        for name, p in ref.named_parameters():
            if name.endswith(("bias", "grep_a")) or "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    ours = BEATsEncoder(config).eval()
    report = load_audio_state_dict(ours, ref.state_dict(), kind="beats")
    return ref, ours, report


def as_float64(reference: nn.Module) -> nn.Module:
    """The reference in float64, as far as ESPnet allows: it casts the fbank to float32 before the patch
    embedding (`.float()`; a pre-hook casts it back) and computes GELU in float32 whatever the model's dtype,
    so its float64 run still rounds there to float32."""
    ref = reference.double()
    ref.patch_embedding.register_forward_pre_hook(lambda m, args: (args[0].to(m.weight.dtype),))
    return ref
