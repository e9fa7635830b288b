"""LAION-CLAP's reference HTSAT (``laion_clap.clap_module.htsat``), for equality tests and speed benchmarks.

A test and benchmark helper, kept out of the hade package because it patches ``sys.modules``: used by
benchmarks/encoder.py and tests/models/test_htsat_reference.py (both load it by path).

``laion_clap`` is optional (install it with ``pip install --no-deps laion_clap torchlibrosa librosa ...``;
the Makefile does). Its ``__init__`` imports the whole training stack (torchvision, h5py, wget, ...), so the
HTSAT module is imported without it: the packages are registered as namespace stubs and
``clap_module.utils`` is replaced by a module holding the reference's own ``do_mixup``/``interpolate``
functions compiled from its source file — the reference code itself runs unchanged.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn

from hade.models.convert import LAION_FRONT_END, apply_state_dict, map_state_dict
from hade.models.encoders.htsat import HTSATEncoder, build_htsat

REFERENCE_MODULE = "laion_clap.clap_module.htsat"
# LAION-CLAP's HTSAT-tiny audio configuration (48 kHz, 10 s clips).
TINY_AUDIO_CONFIG = dict(model_name="tiny", class_num=527, sample_rate=48000, window_size=1024, hop_size=480,
                         mel_bins=64, fmin=50, fmax=14000, clip_samples=480000)


class ReferenceUnavailable(ImportError):
    """laion_clap (or what its HTSAT module imports) is not installed; the message says what to install."""


def import_reference_htsat() -> types.ModuleType:
    """The module ``laion_clap.clap_module.htsat``; raises :class:`ReferenceUnavailable` when missing."""
    if REFERENCE_MODULE in sys.modules:
        return sys.modules[REFERENCE_MODULE]
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or not spec.submodule_search_locations:
        raise ReferenceUnavailable("laion_clap is not installed (pip install --no-deps laion_clap==1.1.7 "
                                   "torchlibrosa librosa ...; see the Makefile)")
    try:
        import librosa.filters  # noqa: F401  (torchlibrosa's filterbank)
        import torchlibrosa  # noqa: F401
    except ImportError as e:
        raise ReferenceUnavailable(f"the reference HTSAT needs torchlibrosa and librosa: {e}") from e
    root = Path(next(iter(spec.submodule_search_locations)))
    names = ("laion_clap", "laion_clap.clap_module", "laion_clap.clap_module.utils")
    saved = {n: sys.modules.get(n) for n in names}
    try:
        for name, path in (("laion_clap", root), ("laion_clap.clap_module", root / "clap_module")):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
        utils = types.ModuleType("laion_clap.clap_module.utils")
        source = root / "clap_module" / "utils.py"
        tree = ast.parse(source.read_text())
        funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("do_mixup", "interpolate")]
        exec(compile(ast.Module(body=funcs, type_ignores=[]), str(source), "exec"), utils.__dict__)
        sys.modules[utils.__name__] = utils
        return importlib.import_module(REFERENCE_MODULE)
    except ImportError as e:
        raise ReferenceUnavailable(f"cannot import laion_clap's HTSAT module: {e}") from e
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def reference_tiny(seed: int = 0) -> nn.Module:
    """LAION-CLAP's HTSAT-tiny (eval mode) with seeded random weights, and random non-trivial BatchNorm
    statistics and LayerNorm affine parameters (so that a wrong norm placement cannot pass unnoticed)."""
    ref = import_reference_htsat()
    torch.manual_seed(seed)
    model = ref.HTSAT_Swin_Transformer(spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=527,
                                       embed_dim=96, depths=[2, 2, 6, 2], num_heads=[4, 8, 16, 32], window_size=8,
                                       config=types.SimpleNamespace(**TINY_AUDIO_CONFIG))
    with torch.no_grad():
        model.bn0.running_mean.uniform_(-30.0, 0.0)
        model.bn0.running_var.uniform_(50.0, 200.0)
        model.bn0.weight.uniform_(0.5, 1.5)
        model.bn0.bias.uniform_(-0.5, 0.5)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def hade_from_reference(model: nn.Module):
    """hade's encoder (HTSAT-tiny with LAION's front end, eval mode) holding `model`'s weights, loaded through
    the LAION-CLAP key map exactly as `hade convert` loads a checkpoint; -> (encoder, load report)."""
    encoder: HTSATEncoder = build_htsat("htsat-tiny", **LAION_FRONT_END).eval()
    state = {f"module.audio_branch.{k}": v for k, v in model.state_dict().items()}
    mapped, report = map_state_dict({"state_dict": state})
    apply_state_dict(encoder, mapped, report)
    return encoder, report


def run_reference(model: nn.Module, waveform: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """waveform [B, T] at 48 kHz -> (the four stage outputs [B, L_s, C_s] (the last after the final norm, as
    hade's), the pooled embedding [B, 768]) of the reference model, without gradients."""
    stages: list[torch.Tensor] = []

    def keep(_m, _i, out):
        stages.append(out[0] if isinstance(out, tuple) else out)

    hooks = [layer.blocks[-1].register_forward_hook(keep) for layer in model.layers]
    try:
        with torch.no_grad():
            out = model({"waveform": waveform}, device=waveform.device)
            stages[-1] = model.norm(stages[-1])
    finally:
        for h in hooks:
            h.remove()
    return stages, out["embedding"]


__all__ = ["ReferenceUnavailable", "TINY_AUDIO_CONFIG", "hade_from_reference", "import_reference_htsat",
           "reference_tiny", "run_reference"]
