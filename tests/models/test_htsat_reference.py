"""hade's HTSAT equals LAION-CLAP's reference HTSAT_Swin_Transformer (random weights, LAION front end).

The reference comes from the installed ``laion_clap`` package through benchmarks/_laion_reference.py, a
helper outside the package (skipped when laion_clap is not installed; the Makefile installs it).
"""
from __future__ import annotations

import pytest
import torch
from _scripts import load_script


_helper = load_script("benchmarks/_laion_reference.py")
ReferenceUnavailable, hade_from_reference = _helper.ReferenceUnavailable, _helper.hade_from_reference
reference_tiny, run_reference = _helper.reference_tiny, _helper.run_reference

TOL = 1e-4


@pytest.fixture(scope="module")
def pair():
    try:
        model = reference_tiny(seed=0)
    except ReferenceUnavailable as e:
        pytest.skip(str(e))
    encoder, report = hade_from_reference(model)
    return model, encoder, report


def _waveform(seconds: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    n = int(seconds * 48000)
    t = torch.arange(n) / 48000
    tone = 0.3 * torch.sin(2 * torch.pi * 440.0 * t) + 0.2 * torch.sin(2 * torch.pi * 3000.0 * t * (1 + t))
    return torch.stack([tone + 0.05 * torch.randn(n, generator=g), 0.1 * torch.randn(n, generator=g)])


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
    ref_stages, ref_pooled = run_reference(model, wav)
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


def _encoder_benchmark():
    """benchmarks/encoder.py as a module (benchmarks/ is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "encoder.py"
    spec = importlib.util.spec_from_file_location("hade_bench_encoder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_encoder_benchmark_reports_both_models(pair, capsys):
    bench = _encoder_benchmark()
    assert bench.main(["--batch", "1", "--seconds", "1", "--rounds", "1", "--threads", "0", "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert [row["precision"] for row in result["rows"]] == ["fp32"] + (["bf16"] if bf16 else [])
    if bf16:  # low precision is reported against fp32, not held to the fp32 tolerance
        assert 0 < result["max_diff"]["pooled_bf16_vs_fp32"] < 0.5
    row = result["rows"][0]
    assert row["reference_clips_s"] > 0 and row["hade_clips_s"] > 0
    assert row["ratio"] == pytest.approx(row["hade_clips_s"] / row["reference_clips_s"])
    assert len(result["max_diff"]["stages"]) == 4 and max(result["max_diff"]["stages"]) < TOL


def test_encoder_benchmark_fails_on_different_outputs(pair, monkeypatch, capsys):
    bench = _encoder_benchmark()
    real = bench.hade_from_reference

    def perturbed(model):
        encoder, report = real(model)
        with torch.no_grad():
            encoder.layers[2].blocks[0].mlp.fc1.bias.add_(0.05)
        return encoder, report

    monkeypatch.setattr(bench, "hade_from_reference", perturbed)
    assert bench.main(["--batch", "1", "--seconds", "1", "--rounds", "1", "--threads", "0"]) == 1
    assert "FAIL: outputs differ" in capsys.readouterr().err


def test_encoder_benchmark_text_row_compares_laion_and_hade_text_towers(pair):
    bench = _encoder_benchmark()
    row = bench.measure_text(batch=4, rounds=1, layers=1)
    assert row["max_diff"] < TOL and row["layers"] == 1 and row["batch"] == 4
    assert row["reference_captions_s"] > 0 and row["hade_captions_s"] > 0
    assert row["ratio"] == pytest.approx(row["hade_captions_s"] / row["reference_captions_s"])
    assert "text fp32" in bench.report_text(row)
