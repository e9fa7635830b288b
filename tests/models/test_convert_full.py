"""Complete LAION-CLAP and WavCaps checkpoints become hade `dp` models that score as the originals.

LAION-CLAP: laion_clap's own ``CLAP`` (what ``CLAP_Module`` wraps; HTSAT-tiny and a small RoBERTa, random
weights, nothing downloaded) through benchmarks/_laion_reference.py; skipped when laion_clap is missing.
WavCaps: the published ASE architecture (HTSAT, BertModel [CLS], Linear-ReLU-Linear projections, L2
normalisation, logits / temp) assembled from the same reference HTSAT class (WavCaps' copy has the same
core) at small test geometry, saved in WavCaps' key layout.
"""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _scripts import load_script
import hade
from hade.errors import InputError
from hade.models.convert import format_report
from hade.models.convert_full import convert_full
from hade.models.encoders.htsat import htsat_config
from hade.models.encoders.text_bert import bundled_minilm_dir, load_tokenizer

_wavcaps = load_script("tests/models/_wavcaps_layout.py")
_ref = load_script("benchmarks/_laion_reference.py")

TOL = 1e-4
CAPTIONS = ["a dog barks", "bar dog ks in the bar", "x"]


def _tones(batch: int, seconds: float, rate: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    n = int(seconds * rate)
    t = torch.arange(n) / rate
    base = 0.3 * torch.sin(2 * torch.pi * 440.0 * t) + 0.2 * torch.sin(2 * torch.pi * 1500.0 * t * (1 + t))
    return torch.stack([base * (i + 1) / batch + 0.05 * torch.randn(n, generator=g) for i in range(batch)])


# ---- LAION-CLAP ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def laion(tmp_path_factory):
    try:
        clap = _ref.reference_clap(seed=0)
    except _ref.ReferenceUnavailable as e:
        pytest.skip(str(e))
    tokenizer_dir = _ref.write_tiny_roberta_tokenizer(tmp_path_factory.mktemp("roberta") / "tok")
    model, report = convert_full(_ref.clap_state_dict(clap), tokenizer_dir)
    return clap, model, report


def test_laion_clap_text_audio_and_scale_equal_the_reference(laion):
    clap, model, report = laion
    assert report.loaded and report.complete and not report.unexpected
    assert model.config.text_config["model_type"] == "roberta" and model.config.text_pooling == "pooler"
    assert model.config.max_text_tokens == 77 and model.sample_rate == 48000 and model.config.embed_dim == 512
    ref_text = _ref.clap_text_embedding(clap, model.tokenizer, CAPTIONS)
    wave = _tones(2, 2.0, 48000)
    ref_audio = _ref.clap_audio_embedding(clap, wave)
    with torch.no_grad():
        text, audio = model.encode_text(CAPTIONS), model.encode_audio(wave)
    torch.testing.assert_close(text["embed"], ref_text, atol=TOL, rtol=0)
    torch.testing.assert_close(audio["embed"], ref_audio, atol=TOL, rtol=0)
    scale = model.config.head_options["logit_scale"]
    assert abs(scale - float(clap.logit_scale_a.exp())) < TOL * scale
    assert abs(report.scalars["logit_scale_t"] - float(clap.logit_scale_t.exp())) < TOL * scale
    # LAION's audio->text logits are logit_scale_a * <a, t>: hade's cosine times the kept scale
    logits = float(clap.logit_scale_a.exp()) * ref_audio @ ref_text.T
    torch.testing.assert_close(scale * model.score(text, audio).T, logits, atol=TOL * scale, rtol=0)
    text_report = format_report(report)
    assert "MLP-loss transform" in text_report and "logit_scale=" in text_report


def test_a_saved_laion_conversion_loads_with_its_roberta_pooler(laion, tmp_path):
    from hade.checkpoint import save_model

    _, model, _ = laion
    save_model(model, tmp_path / "ckpt")
    loaded = hade.load(tmp_path / "ckpt")
    assert loaded.text_encoder.bert.pooler is not None and loaded.config.text_pooling == "pooler"
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(CAPTIONS)["embed"], model.encode_text(CAPTIONS)["embed"])


def test_htsat_base_geometry_is_read_from_the_shapes():
    from hade.models.convert_full import infer_audio_overrides
    from hade.models.encoders.htsat import build_htsat

    base = build_htsat("htsat-tiny", embed_dim=128, depths=[2, 2, 12, 2])
    mapped = {f"audio_encoder.{k}": v for k, v in base.state_dict().items()}
    found = infer_audio_overrides(mapped, {"sample_rate": 48000, "hop_length": 480})
    assert found == {"embed_dim": 128, "depths": [2, 2, 12, 2], "sample_rate": 48000, "hop_length": 480}


def test_laion_fusion_checkpoints_are_refused_with_a_clear_message():
    state = {"state_dict": {"module.audio_branch.patch_embed.mel_conv2d.weight": torch.zeros(4, 4),
                            "module.audio_branch.patch_embed.proj.weight": torch.zeros(96, 1, 4, 4),
                            "module.logit_scale_a": torch.tensor(1.0)}}
    with pytest.raises(InputError, match="feature-fusion checkpoint.*non-fusion releases"):
        convert_full(state, "unused")


def test_an_audio_only_checkpoint_cannot_be_converted_completely():
    state = {"state_dict": {"sed_model.patch_embed.proj.weight": torch.zeros(96, 1, 4, 4)}}
    with pytest.raises(InputError, match="LAION-CLAP or WavCaps"):
        convert_full(state, "unused")


# ---- WavCaps ------------------------------------------------------------------------------------------------

class _WavCapsASE(nn.Module):
    """WavCaps' ASE at test size: module names as in WavCaps (audio_encoder.audio_enc, text_encoder.text_encoder,
    audio_proj, text_proj, temp), HTSAT = the reference HTSAT class (32 kHz-style torchlibrosa front end)."""

    def __init__(self, htsat: nn.Module, bert: nn.Module, embed: int, temp: float) -> None:
        super().__init__()
        self.audio_encoder = nn.Module()
        self.audio_encoder.audio_enc = htsat
        self.text_encoder = nn.Module()
        self.text_encoder.text_encoder = bert
        width, text_width = htsat.num_features, bert.config.hidden_size
        self.audio_proj = nn.Sequential(nn.Linear(width, embed), nn.ReLU(), nn.Linear(embed, embed))
        self.text_proj = nn.Sequential(nn.Linear(text_width, embed), nn.ReLU(), nn.Linear(embed, embed))
        self.temp = nn.Parameter(torch.ones([]) * temp)

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        feats = self.audio_encoder.audio_enc({"waveform": wave}, device=wave.device)["embedding"]
        return F.normalize(self.audio_proj(feats), dim=-1)

    def encode_text(self, tokenizer, captions: list[str]) -> torch.Tensor:
        batch = tokenizer(captions, padding="longest", truncation=True, max_length=30, return_tensors="pt")
        out = self.text_encoder.text_encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask)[0]
        return F.normalize(self.text_proj(out[:, 0, :]), dim=-1)

    def checkpoint(self) -> dict:
        """The layout WavCaps saves: {"model": state_dict, "config": settings} (front-end keys renamed to
        WavCaps' audio_feats_extractor)."""
        state = {}
        for key, value in self.state_dict().items():
            key = key.replace("audio_enc.spectrogram_extractor.", "audio_enc.audio_feats_extractor.mel_trans.")
            key = key.replace("audio_enc.logmel_extractor.", "audio_enc.audio_feats_extractor.log_trans.")
            state[key] = value
        cfg = htsat_config("htsat-test")
        return {"model": state, "epoch": 7, "config": {"audio_args": _wavcaps.audio_args(cfg), "embed_size": 48}}


def _wavcaps_reference(seed: int = 0) -> _WavCapsASE:
    from transformers import BertConfig, BertModel

    htsat_module = _ref.import_reference_htsat()
    cfg = htsat_config("htsat-test")
    torch.manual_seed(seed)
    audio_cfg = types.SimpleNamespace(sample_rate=cfg.sample_rate, window_size=cfg.n_fft, hop_size=cfg.hop_length,
                                      mel_bins=cfg.mel_bins, fmin=cfg.fmin, fmax=cfg.fmax, clip_samples=cfg.sample_rate,
                                      class_num=527)
    htsat = htsat_module.HTSAT_Swin_Transformer(spec_size=cfg.spec_size, patch_size=cfg.patch_size,
                                                patch_stride=(cfg.patch_size, cfg.patch_size), num_classes=527,
                                                embed_dim=cfg.embed_dim, depths=cfg.depths, num_heads=cfg.num_heads,
                                                window_size=cfg.window_size, config=audio_cfg)
    bert = BertModel(BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=96, max_position_embeddings=64), add_pooling_layer=False)
    model = _WavCapsASE(htsat, bert, embed=48, temp=0.05)
    with torch.no_grad():
        _ref.perturb_norms(model, htsat.bn0)
    return model.eval()


@pytest.fixture(scope="module")
def bert_tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert") / "tok"
    load_tokenizer(bundled_minilm_dir()).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def wavcaps(bert_tokenizer_dir):
    try:
        reference = _wavcaps_reference()
    except _ref.ReferenceUnavailable as e:
        pytest.skip(str(e))
    model, report = convert_full(reference.checkpoint(), bert_tokenizer_dir)
    return reference, model, report


def test_wavcaps_every_embedding_and_the_temperature_equal_the_reference(wavcaps):
    reference, model, report = wavcaps
    assert report.kind == "wavcaps" and report.loaded and report.complete and not report.unexpected
    assert model.config.text_config["model_type"] == "bert" and model.config.text_pooling == "cls"
    assert model.config.max_text_tokens == 30 and model.sample_rate == 8000 and model.config.embed_dim == 48
    assert model.audio_encoder.config.spec_size == 64  # geometry read from the checkpoint's shapes and masks
    assert any("audio_feats_extractor" in k for k in report.skipped)
    wave = _tones(3, 0.9, 8000)
    with torch.no_grad():
        ref_audio = reference.encode_audio(wave)
        ref_text = reference.encode_text(model.tokenizer, CAPTIONS + ["a much longer caption " * 8])
        audio, text = model.encode_audio(wave), model.encode_text(CAPTIONS + ["a much longer caption " * 8])
    torch.testing.assert_close(audio["embed"], ref_audio, atol=TOL, rtol=0)
    torch.testing.assert_close(text["embed"], ref_text, atol=TOL, rtol=0)
    scale = model.config.head_options["logit_scale"]
    assert abs(scale - 1 / float(reference.temp)) < TOL * scale
    torch.testing.assert_close(scale * model.score(text, audio), ref_text @ ref_audio.T / reference.temp,
                               atol=TOL * scale, rtol=0)


def test_a_partial_wavcaps_checkpoint_is_refused_and_named(wavcaps, bert_tokenizer_dir):
    reference, _, _ = wavcaps
    ckpt = reference.checkpoint()
    del ckpt["model"]["text_encoder.text_encoder.encoder.layer.1.output.dense.bias"]
    del ckpt["model"]["audio_proj.2.bias"]
    with pytest.raises(InputError) as e:
        convert_full(ckpt, bert_tokenizer_dir)
    assert "refusing a partial load" in str(e.value) and "allow_partial" in str(e.value)
    assert "text_encoder.bert.encoder.layer.1.output.dense.bias" in str(e.value)
    assert "head.audio_proj.2.bias" in str(e.value)
    _, report = convert_full(ckpt, bert_tokenizer_dir, allow_partial=True)
    assert sorted(report.missing) == ["head.audio_proj.2.bias", "text_encoder.bert.encoder.layer.1.output.dense.bias"]
    assert report.loaded and not report.complete
    del ckpt["model"]["audio_proj.2.weight"]  # the projection width cannot even be read: refused before building
    with pytest.raises(InputError, match="head.audio_proj.2.weight"):
        convert_full(ckpt, bert_tokenizer_dir, allow_partial=True)
    # and a tensor with no place in the model is refused too, not dropped
    ckpt = reference.checkpoint()
    ckpt["model"]["text_encoder.text_encoder.pooler.dense.weight"] = torch.zeros(128, 128)
    with pytest.raises(InputError, match="no place in the converted wavcaps model") as refused:
        convert_full(ckpt, bert_tokenizer_dir)
    assert "loaded: no" in str(refused.value)  # refused before anything was loaded


def test_a_tokenizer_of_another_family_is_refused(wavcaps, tmp_path):
    reference, _, _ = wavcaps
    roberta = _ref.write_tiny_roberta_tokenizer(tmp_path / "roberta")
    with pytest.raises(InputError, match="another model"):
        convert_full(reference.checkpoint(), roberta)


def test_the_cli_writes_a_checkpoint_that_loads_and_scores_the_same(wavcaps, bert_tokenizer_dir, tmp_path, capsys):
    from hade.cli import main

    reference, model, _ = wavcaps
    torch.save(reference.checkpoint(), tmp_path / "wavcaps.pt")
    assert main(["convert", str(tmp_path / "wavcaps.pt"), "--out", str(tmp_path / "ckpt"),
                 "--tokenizer", str(bert_tokenizer_dir)]) == 0
    assert "complete wavcaps model" in capsys.readouterr().out
    loaded = hade.load(tmp_path / "ckpt")
    wave = _tones(2, 0.9, 8000)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_audio(wave)["embed"], model.encode_audio(wave)["embed"])
        torch.testing.assert_close(loaded.encode_text(CAPTIONS)["embed"], model.encode_text(CAPTIONS)["embed"])
    assert loaded.config.head_options == model.config.head_options
