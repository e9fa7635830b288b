"""Hugging Face ``transformers.ClapModel`` folders become hade `dp` models that score as transformers does.

The reference is transformers' own ClapModel (and ClapFeatureExtractor), built from a tiny random config (2 Swin
stages, 16 mel bins, a 2-layer RoBERTa over a 268-token byte-level BPE), fp32, saved with save_pretrained into
a tmp folder with its tokenizer and feature-extractor files, as a hub download holds them. LayerNorms, the input
BatchNorm's statistics and the attention bias tables are moved away from their initial values so that a swapped
or missing tensor would show.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from _scripts import load_script
import hade
from hade.data.audio import fit_length
from hade.errors import InputError
from hade.models.convert import format_report
from hade.models.convert_hf import convert_hf_clap, is_hf_clap_folder

_ref = load_script("benchmarks/_laion_reference.py")

TOL = 1e-4  # the bound for embeddings from the same input
END_TO_END_TOL = 1e-3  # the goal from waveforms, each side with its own front end
CAPTIONS = ["a dog barks", "bar dog ks in the bar", "x"]
RATE = 16000
FRONT_END = dict(feature_size=16, sampling_rate=RATE, hop_length=160, fft_window_size=512, max_length_s=1,
                 frequency_min=50, frequency_max=8000, truncation="rand_trunc", padding="repeatpad")


def _clap_config():
    from transformers import ClapConfig

    return ClapConfig(
        text_config=dict(vocab_size=268, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=80, layer_norm_eps=1e-5),
        audio_config=dict(spec_size=64, num_mel_bins=16, window_size=4, depths=[2, 2], num_attention_heads=[2, 4],
                          patch_embeds_hidden_size=16, hidden_size=32, patch_size=4, patch_stride=[4, 4]),
        projection_dim=24, logit_scale_init_value=20.0)


def _write_folder(folder: Path, seed: int = 0):
    """A tiny random ClapModel saved as a hub folder (weights, tokenizer, feature extractor); -> the model."""
    from transformers import ClapFeatureExtractor, ClapModel

    torch.manual_seed(seed)
    model = ClapModel(_clap_config()).eval()
    with torch.no_grad():
        _ref.perturb_norms(model, model.audio_model.audio_encoder.batch_norm)
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0.0, 0.5)
    model.save_pretrained(str(folder))
    _ref.write_tiny_roberta_tokenizer(folder)
    ClapFeatureExtractor(**FRONT_END).save_pretrained(str(folder))
    return model


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clap") / "clap-htsat-tiny-random"
    reference = _write_folder(folder)
    model, report = convert_hf_clap(folder)
    return folder, reference, model, report


def _waves(seconds: float, batch: int = 2) -> np.ndarray:
    g = torch.Generator().manual_seed(3)
    n = int(seconds * RATE)
    t = torch.arange(n) / RATE
    tone = 0.3 * torch.sin(2 * torch.pi * 440.0 * t) + 0.2 * torch.sin(2 * torch.pi * 1500.0 * t * (1 + t))
    return torch.stack([tone * (i + 1) / batch + 0.05 * torch.randn(n, generator=g) for i in range(batch)]).numpy()


def _hf_text(reference, tokenizer) -> torch.Tensor:
    batch = tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return reference.get_text_features(**batch).pooler_output


def _hf_audio(reference, features: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return reference.get_audio_features(input_features=features).pooler_output


def _hade_audio_from_features(model, features: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.head.audio_repr(model.audio_encoder.forward_logmel(features))["embed"]


def test_text_embeddings_and_scale_equal_transformers(hf):
    """Measured max abs difference 1.2e-7 (fp32)."""
    folder, reference, model, report = hf
    assert report.loaded and report.complete and not report.unexpected and report.kind == "hf-clap"
    assert model.config.text_config["model_type"] == "roberta" and model.config.text_pooling == "pooler"
    assert model.config.head == "dp" and model.config.embed_dim == 24
    with torch.no_grad():
        ours = model.encode_text(CAPTIONS)["embed"]
    torch.testing.assert_close(ours, _hf_text(reference, model.tokenizer), atol=TOL, rtol=0)
    assert model.config.head_options["logit_scale"] == pytest.approx(float(reference.logit_scale_a.detach().exp()), rel=1e-6)
    assert report.scalars["logit_scale_t"] == pytest.approx(float(reference.logit_scale_t.detach().exp()), rel=1e-6)


def test_audio_embeddings_equal_transformers_on_the_same_features(hf):
    """The same log-mel input_features into both encoders: measured max abs difference 1.1e-7 (fp32)."""
    folder, reference, model, report = hf
    features = torch.randn(3, 1, 101, 16, generator=torch.Generator().manual_seed(1)) * 12.0 - 40.0
    ours = _hade_audio_from_features(model, features)
    theirs = _hf_audio(reference, features)
    torch.testing.assert_close(ours, theirs, atol=TOL, rtol=0)
    assert (ours - _hade_audio_from_features(model, features.flip(2))).abs().max() > 100 * TOL  # input matters


def test_key_map_report_names_every_part(hf):
    folder, reference, model, report = hf
    text = format_report(report)
    assert "hf-clap" in text and "logit_scale=" in text and "loaded: yes" in text
    assert "audio_encoder.layers.1.blocks.1.attn.qkv.weight" in report.matched
    assert "audio_encoder.bn0.running_mean" in report.matched and "head.text_proj.2.weight" in report.matched
    assert set(report.skipped) >= {"logit_scale_a", "text_model.embeddings.position_ids"}
    assert report.recomputed == [f"audio_encoder.layers.{s}.blocks.1.attn_mask" for s in (0, 1)]  # HF has none


def test_end_to_end_from_waveforms_matches_clap_feature_extractor(hf):
    """hade's waveform front end against transformers' ClapFeatureExtractor (rand_trunc, repeatpad), both models
    in fp32. Clips of the extractor's length (max_length_s): measured max abs difference 6e-8 (log-mel 5.7e-6 dB).
    A shorter clip matches when hade repeat-pads it as the extractor does (fit_length(pad="repeat"), measured
    1.2e-7); zero padding, what hade's index does to a short file, differs by 0.56 here.
    Full-size figures (HTSAT-tiny/-base, 12 RoBERTa blocks, 48 kHz, 10 s): benchmarks/hf_clap.py."""
    from transformers import ClapFeatureExtractor

    folder, reference, model, report = hf
    extractor = ClapFeatureExtractor.from_pretrained(str(folder))
    assert model.sample_rate == RATE and model.clip_samples == RATE * FRONT_END["max_length_s"]
    full = _waves(1.0)
    short = _waves(0.3)  # repeated 3 times, then 0.1 s of silence
    cases = {"full": (full, full), "repeat": (short, [fit_length(w, RATE, pad="repeat") for w in short])}
    for name, (theirs_in, ours_in) in cases.items():
        theirs = _hf_audio(reference, extractor(list(theirs_in), sampling_rate=RATE, return_tensors="pt")
                           ["input_features"].float())
        with torch.no_grad():
            ours = model.encode_audio(torch.from_numpy(np.stack(ours_in)))["embed"]
        assert (ours - theirs).abs().max() <= END_TO_END_TOL, name
    zero = [fit_length(w, RATE) for w in short]
    with torch.no_grad():
        zero_padded = model.encode_audio(torch.from_numpy(np.stack(zero)))["embed"]
    assert (zero_padded - theirs).abs().max() > 10 * END_TO_END_TOL


def test_fit_length_repeat_pads_as_clap_feature_extractor():
    wave = np.arange(1, 4, dtype=np.float32)
    assert fit_length(wave, 8, pad="repeat").tolist() == [1, 2, 3, 1, 2, 3, 0, 0]
    assert fit_length(wave, 8).tolist() == [1, 2, 3, 0, 0, 0, 0, 0]
    with pytest.raises(InputError, match="pad must be one of"):
        fit_length(wave, 8, pad="mirror")


def test_hade_load_and_hade_convert_take_the_folder(hf, tmp_path, capsys):
    from hade.checkpoint import read_model_config
    from hade.cli import main

    folder, reference, model, report = hf
    assert is_hf_clap_folder(folder) and not is_hf_clap_folder(tmp_path)
    loaded = hade.load(folder)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(CAPTIONS)["embed"], _hf_text(reference, loaded.tokenizer),
                                   atol=TOL, rtol=0)
    with pytest.raises(InputError, match="ClapModel folder, not a hade checkpoint.*hade convert"):
        read_model_config(folder)  # what `hade index --ckpt` reads: the folder must be converted first
    out = tmp_path / "converted"
    assert main(["convert", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hf-clap" in printed and "loaded: yes" in printed and "16000 Hz, 1 s clips" in printed
    info = json.loads((out / "info.json").read_text())
    assert info["complete"] and info["conversion"]["kind"] == "hf-clap"
    saved = hade.load(out)
    wave = torch.from_numpy(_waves(1.0))
    with torch.no_grad():
        torch.testing.assert_close(saved.encode_audio(wave)["embed"], model.encode_audio(wave)["embed"],
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(saved.encode_text(CAPTIONS)["embed"], model.encode_text(CAPTIONS)["embed"],
                                   atol=1e-6, rtol=0)


def test_a_fusion_config_is_refused(hf, tmp_path):
    folder, *_ = hf
    fused = tmp_path / "fused"
    fused.mkdir()
    config = json.loads((folder / "config.json").read_text())
    config["audio_config"].update(enable_fusion=True, fusion_type="aff_2d")
    (fused / "config.json").write_text(json.dumps(config))
    (fused / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(InputError, match="enable_fusion is true.*unfused"):
        convert_hf_clap(fused)
    with pytest.raises(InputError, match="enable_fusion"):
        hade.load(fused)


def _copy(folder: Path, to: Path, drop: str | None = None, add: dict | None = None) -> Path:
    to.mkdir()
    for file in folder.iterdir():
        if file.name != "model.safetensors":
            (to / file.name).write_bytes(file.read_bytes())
    state = {k: v for k, v in load_file(str(folder / "model.safetensors")).items() if k != drop}
    save_file({**state, **(add or {})}, str(to / "model.safetensors"))
    return to


def test_a_partial_load_is_refused_unless_allowed(hf, tmp_path):
    folder, *_ = hf
    key = "audio_model.audio_encoder.layers.1.blocks.0.attention.self.key.weight"
    partial = _copy(folder, tmp_path / "partial", drop=key)
    with pytest.raises(InputError, match="(?s)refusing a partial load.*MISSING.*attn.qkv.weight"):
        convert_hf_clap(partial)
    model, report = convert_hf_clap(partial, allow_partial=True)
    assert report.missing == ["audio_encoder.layers.1.blocks.0.attn.qkv.weight"] and report.loaded
    assert "triple incomplete" in report.unexpected[key.replace(".key.", ".query.")]
    extra = _copy(folder, tmp_path / "extra", add={"audio_model.audio_encoder.tscam_conv.weight": torch.zeros(2)})
    with pytest.raises(InputError, match="(?s)refusing a partial load.*tscam_conv"):
        convert_hf_clap(extra)


def test_a_folder_without_tokenizer_files_names_what_to_add(hf, tmp_path):
    folder, *_ = hf
    bare = _copy(folder, tmp_path / "bare")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (bare / name).unlink()
    with pytest.raises(InputError, match="no tokenizer files.*vocab.json \\+ merges.txt.*--tokenizer"):
        convert_hf_clap(bare)
    model, _ = convert_hf_clap(bare, tokenizer_dir=folder)
    assert model.tokenizer.pad_token_id == 1


def test_unsupported_audio_variants_are_refused(hf, tmp_path):
    folder, *_ = hf
    config = json.loads((folder / "config.json").read_text())
    config["audio_config"]["patch_stride"] = [2, 2]
    odd = _copy(folder, tmp_path / "odd")
    (odd / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="patch_size/patch_stride.*non-overlapping"):
        convert_hf_clap(odd)


def test_init_from_the_folder_takes_encoders_and_projections(hf, tmp_path):
    """`hade train --init-from FOLDER`: the run gets the folder's encoders, tokenizer and front end
    (adopt_encoders), every encoder tensor and, for heads with DP's pooled projection (DCR), the projections;
    the report (the trainer's init.json, as tests/train/test_init.py checks) says where each part came from."""
    from hade.config import ModelConfig
    from hade.train.init import adopt_encoders, initialise_from

    folder, reference, model, report = hf
    head = ModelConfig(head="tha+dcr", head_options={"audio_stages": [1, 2], "text_blocks": [1, 2]})  # 2 stages
    config = adopt_encoders(head, folder)
    assert config.audio_overrides == model.config.audio_overrides and config.text_config == model.config.text_config
    torch.manual_seed(0)
    target = hade.create_model(config)
    init = initialise_from(target, folder)
    assert init.kind == "hf-clap" and init.head == "dp"
    assert init.parts == {"audio_encoder": "checkpoint", "text_encoder": "checkpoint",
                             "head.parts.tha": "fresh", "head.parts.dcr": "partly"}
    assert init.renamed["head.parts.dcr.text_proj.2.weight"] == "head.text_proj.2.weight"
    ours, theirs = target.state_dict(), model.state_dict()
    assert all(torch.equal(ours[n], theirs[n]) for n in theirs if n.startswith(("audio_encoder.", "text_encoder.")))
