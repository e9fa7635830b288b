"""hade's HTSAT equals LAION-CLAP's reference HTSAT_Swin_Transformer (random weights, LAION front end).

The reference module is imported from the installed ``laion_clap`` package without running
``laion_clap/__init__.py`` (which pulls in torchvision, h5py, wget, ... for the training code): the
packages are registered as namespace stubs and ``clap_module.utils`` is replaced by a module holding the
reference's own ``do_mixup``/``interpolate`` functions compiled from its source file.
"""
from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from hade.models.convert import LAION_FRONT_END, map_state_dict, apply_state_dict
from hade.models.encoders.htsat import build_htsat

TOL = 1e-4


def _import_reference_htsat() -> types.ModuleType:
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("laion_clap is not installed (pip install --no-deps laion_clap torchlibrosa librosa ...)")
    try:
        import librosa.filters  # noqa: F401  (torchlibrosa's filterbank)
        import torchlibrosa  # noqa: F401
    except ImportError as e:
        pytest.skip(f"reference HTSAT needs torchlibrosa + librosa: {e}")
    root = Path(next(iter(spec.submodule_search_locations)))
    if "laion_clap.clap_module.htsat" in sys.modules:
        return sys.modules["laion_clap.clap_module.htsat"]
    saved = {n: sys.modules.get(n) for n in ("laion_clap", "laion_clap.clap_module", "laion_clap.clap_module.utils")}
    try:
        for name, path in (("laion_clap", root), ("laion_clap.clap_module", root / "clap_module")):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
        utils = types.ModuleType("laion_clap.clap_module.utils")
        tree = ast.parse((root / "clap_module" / "utils.py").read_text())
        funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("do_mixup", "interpolate")]
        exec(compile(ast.Module(body=funcs, type_ignores=[]), str(root / "clap_module" / "utils.py"), "exec"),
             utils.__dict__)
        sys.modules[utils.__name__] = utils
        return importlib.import_module("laion_clap.clap_module.htsat")
    except ImportError as e:
        pytest.skip(f"cannot import laion_clap's HTSAT module: {e}")
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def _reference_tiny(ref: types.ModuleType) -> torch.nn.Module:
    cfg = types.SimpleNamespace(model_name="tiny", class_num=527, sample_rate=48000, window_size=1024, hop_size=480,
                                mel_bins=64, fmin=50, fmax=14000, clip_samples=480000)
    torch.manual_seed(0)
    model = ref.HTSAT_Swin_Transformer(spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=527,
                                       embed_dim=96, depths=[2, 2, 6, 2], num_heads=[4, 8, 16, 32], window_size=8,
                                       config=cfg)
    # random, non-trivial BatchNorm statistics and LayerNorm affine parameters
    with torch.no_grad():
        model.bn0.running_mean.uniform_(-30.0, 0.0)
        model.bn0.running_var.uniform_(50.0, 200.0)
        model.bn0.weight.uniform_(0.5, 1.5)
        model.bn0.bias.uniform_(-0.5, 0.5)
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def pair():
    ref = _import_reference_htsat()
    model = _reference_tiny(ref)
    encoder = build_htsat("htsat-tiny", **LAION_FRONT_END).eval()
    state = {f"module.audio_branch.{k}": v for k, v in model.state_dict().items()}
    mapped, report = map_state_dict({"state_dict": state})
    apply_state_dict(encoder, mapped, report)
    return model, encoder, report


def _waveform(seconds: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    n = int(seconds * 48000)
    t = torch.arange(n) / 48000
    tone = 0.3 * torch.sin(2 * torch.pi * 440.0 * t) + 0.2 * torch.sin(2 * torch.pi * 3000.0 * t * (1 + t))
    return torch.stack([tone + 0.05 * torch.randn(n, generator=g), 0.1 * torch.randn(n, generator=g)])


def _run_reference(model: torch.nn.Module, wav: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    stages: list[torch.Tensor] = []
    hooks = [layer.blocks[-1].register_forward_hook(lambda _m, _i, out: stages.append(out[0] if isinstance(out, tuple) else out)) for layer in model.layers]
    try:
        with torch.no_grad():
            out = model({"waveform": wav}, device="cpu")
    finally:
        for h in hooks:
            h.remove()
    stages[-1] = model.norm(stages[-1])
    return stages, out["embedding"]


def test_report_is_complete(pair):
    _, _, report = pair
    assert report.kind == "laion-clap" and report.complete and report.loaded
    assert report.stripped_module_prefix
    assert any(k.endswith("logmel_extractor.melW") for k in report.skipped)
    assert any(".tscam_conv." in k for k in report.skipped)


@pytest.mark.parametrize("seconds", [10.0, 4.0])
def test_stages_and_pooled_match_reference(pair, seconds):
    model, encoder, _ = pair
    wav = _waveform(seconds)
    ref_stages, ref_pooled = _run_reference(model, wav)
    with torch.no_grad():
        ours = encoder(wav)
    assert len(ours.stages) == len(ref_stages) == 4
    diffs = []
    for s, (a, b) in enumerate(zip(ours.stages, ref_stages)):
        assert a.shape == b.shape, (s, a.shape, b.shape)
        diffs.append((a - b).abs().max().item())
    pooled_diff = (ours.pooled - ref_pooled).abs().max().item()
    print(f"{seconds:.1f}s max|diff| per stage {diffs}, pooled {pooled_diff:.3g}")
    assert max(diffs) < TOL, diffs
    assert pooled_diff < TOL, pooled_diff


def test_front_end_matches_torchlibrosa(pair):
    model, encoder, _ = pair
    wav = _waveform(10.0)
    with torch.no_grad():
        ref = model.logmel_extractor(model.spectrogram_extractor(wav))
        ours = encoder.logmel(wav)
    assert ref.shape == ours.shape == (2, 1, 1001, 64)
    diff = (ref - ours).abs().max().item()
    print(f"log-mel max|diff| {diff:.3g} dB")
    assert diff < 1e-3  # dB scale, values of order 10..100
