"""`hade explain`: attention maps in seconds, CA/factor arrays, figures, CLI helpers and input errors."""
import argparse
import json
from collections import defaultdict

import numpy as np
import pytest
import soundfile as sf
import torch

import hade
from hade.config import ModelConfig
from hade.data.audio import fit_length
from hade.errors import InputError
from hade.apps.explain import add_parser as add_explain_parser, run as cmd_explain
from hade.explain import explain, save_figures
from hade.models.heads.tha import default_text_blocks

TEXT = "a dog barks loudly now"  # 6 word pieces (bark ##s), 5 words: differs from every level's time bins (16, 8, 4)


def tiny(cfg: ModelConfig, head: str, **options):
    torch.manual_seed(0)
    return hade.create_model(ModelConfig(**{**cfg.__dict__, "head": head, "head_options": options})).eval()


@pytest.fixture(scope="module")
def model(tiny_model_config):
    return tiny(tiny_model_config, "tha+dcr", factors=4)


@pytest.fixture(scope="module")
def wave(model):
    """3 s (longer than the model's 2.05 s clip): noise plus a tone burst, at the model's rate."""
    sr = model.sample_rate
    rng = np.random.default_rng(0)
    t = np.arange(3 * sr) / sr
    w = 0.05 * rng.standard_normal(t.shape[0]) + 0.5 * np.sin(2 * np.pi * 440 * t) * ((t > 0.5) & (t < 1.0))
    return w.astype(np.float32)


@pytest.fixture(scope="module")
def expl(model, wave):
    return explain(model, wave, TEXT)


@torch.no_grad()
def reference_reprs(model, wave, text=TEXT):
    clip = fit_length(wave, model.max_samples)
    return model.encode_text([text]), model.encode_audio(torch.from_numpy(clip)[None])


def test_words_levels_and_shapes(model, expl):
    tha = model.head.parts["tha"]
    assert expl.words == TEXT.split()  # the word mask drops [CLS]/[SEP]; "bark" "##s" is one word
    assert sum(expl.pieces, []) == model.tokenizer.tokenize(TEXT) and ["bark", "##s"] in expl.pieces
    n = len(expl.words)
    assert expl.clip_seconds == pytest.approx(model.max_samples / model.sample_rate)
    assert expl.audio_seconds == pytest.approx(3.0)
    assert [lv.audio_stage for lv in expl.levels] == [2, 3, 4]
    assert [lv.text_block for lv in expl.levels] == list(default_text_blocks(2)) == list(tha.text_blocks)
    grids = model.audio_encoder.config.grids
    for lv in expl.levels:
        h, w = grids[lv.audio_stage - 1]
        bins = 2 * w  # htsat-test: 2 time chunks of w token columns; the h rows split frequency (and chunk)
        assert n != bins
        assert lv.text_to_audio.shape == lv.audio_to_text.shape == (n, bins)
        assert lv.time_edges.shape == (bins + 1,) and lv.bin_tokens.shape == (bins,)
        assert lv.alpha.shape == lv.beta.shape == (h * w, n) and lv.token_seconds.shape == (h * w, 2)
        assert (lv.bin_tokens == h * w // bins).all()  # frequency rows sharing a span are pooled
        assert lv.time_edges[0] == 0.0 and lv.time_edges[-1] == pytest.approx(expl.clip_seconds, abs=1e-5)
        assert (np.diff(lv.time_edges) > 0).all()
        for arr in (lv.text_to_audio, lv.audio_to_text, lv.alpha, lv.beta):
            assert isinstance(arr, np.ndarray) and np.isfinite(arr).all()
    for arr in (expl.factor_similarity, expl.confidence, expl.factor_contribution):
        assert isinstance(arr, np.ndarray) and arr.shape == (4,)


def test_maps_are_distributions_along_the_documented_axes(expl):
    for lv in expl.levels:
        # α: softmax over words per audio token -> each token row and each time column sums to 1 over words
        np.testing.assert_allclose(lv.alpha.sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(lv.text_to_audio.sum(0), 1.0, atol=1e-5)
        # β: softmax over audio tokens per word -> token-count-weighted sum over time bins is 1 per word
        np.testing.assert_allclose(lv.beta.sum(0), 1.0, atol=1e-5)
        np.testing.assert_allclose((lv.audio_to_text * lv.bin_tokens).sum(1), 1.0, atol=1e-5)
        # and not the other way round (would hold for a transposed or mis-normalised map)
        assert not np.allclose(lv.text_to_audio.sum(1), 1.0, atol=1e-3)
        assert not np.allclose(lv.audio_to_text.sum(0) * lv.bin_tokens, 1.0, atol=1e-3)


def test_time_bins_average_the_tokens_that_share_a_time_span(model, wave, expl):
    text_r, audio_r = reference_reprs(model, wave)
    tha = model.head.parts["tha"]
    keep = text_r["tha_mask"][0].numpy()
    feats = model.audio_encoder(torch.from_numpy(fit_length(wave, model.max_samples))[None])
    sizes = np.cumsum([0] + [len(p) for p in expl.pieces])
    for lv, att in zip(expl.levels, tha.attention(text_r, audio_r)):
        pieces_alpha, pieces_beta = att.alpha.numpy()[:, keep], att.beta.numpy()[:, keep]
        # a word's α is the sum of its pieces' (still a distribution over words), its β their mean
        alpha = np.stack([pieces_alpha[:, a:b].sum(1) for a, b in zip(sizes[:-1], sizes[1:])], 1)
        beta = np.stack([pieces_beta[:, a:b].mean(1) for a, b in zip(sizes[:-1], sizes[1:])], 1)
        np.testing.assert_allclose(lv.alpha, alpha, atol=1e-6)
        spans = defaultdict(list)  # independent grouping: tokens by their exact (start, end) seconds
        for m, (s, e) in enumerate(feats.token_seconds[lv.audio_stage - 1].tolist()):
            spans[(s, e)].append(m)
        assert len(spans) == lv.text_to_audio.shape[1]
        for t, (s, e) in enumerate(sorted(spans)):
            assert lv.time_edges[t] == pytest.approx(s, abs=1e-6) and lv.time_edges[t + 1] == pytest.approx(e, abs=1e-6)
            np.testing.assert_allclose(lv.text_to_audio[:, t], alpha[spans[(s, e)]].mean(0), atol=1e-6)
            np.testing.assert_allclose(lv.audio_to_text[:, t], beta[spans[(s, e)]].mean(0), atol=1e-6)


@torch.no_grad()
def test_scores_match_the_model_and_its_parts(model, wave, expl):
    text_r, audio_r = reference_reprs(model, wave)
    assert expl.score == pytest.approx(float(model.score(text_r, audio_r)[0, 0]), abs=1e-5)
    tha, dcr = model.head.parts["tha"], model.head.parts["dcr"]
    tha_part, dcr_part = float(tha.score(text_r, audio_r)[0, 0]), float(dcr.score(text_r, audio_r)[0, 0])
    assert expl.tha_score == pytest.approx(tha_part, abs=1e-5)
    assert tha.scale * sum(lv.text_enhanced + lv.audio_enhanced for lv in expl.levels) == pytest.approx(tha_part, abs=1e-5)
    assert expl.factor_contribution.sum() == pytest.approx(dcr_part, abs=1e-5)
    assert expl.dcr_score + expl.tha_score == pytest.approx(expl.score, abs=1e-5)
    assert expl.confidence.sum() == pytest.approx(1.0, abs=1e-5) and (expl.confidence > 0).all()  # softmax CA
    np.testing.assert_allclose(expl.factor_contribution, expl.confidence * expl.factor_similarity)
    assert (np.abs(expl.factor_similarity) <= 1 + 1e-6).all()
    assert not model.training


def test_file_array_and_tensor_inputs_agree(model, wave, tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, wave, model.sample_rate, subtype="FLOAT")
    a, b, c = (explain(model, x, TEXT) for x in (path, wave, torch.from_numpy(wave)))
    assert a.score == pytest.approx(b.score, abs=1e-6) and c.score == pytest.approx(b.score, abs=1e-6)
    np.testing.assert_allclose(a.levels[0].text_to_audio, b.levels[0].text_to_audio, atol=1e-6)
    sf.write(tmp_path / "hi.wav", wave[: model.sample_rate // 2], 2 * model.sample_rate)  # 0.25 s at 2x rate
    short = explain(model, tmp_path / "hi.wav", TEXT)
    assert short.audio_seconds == pytest.approx(0.25, abs=1e-3)
    assert short.clip_seconds == pytest.approx(b.clip_seconds)  # zero-padded to the clip, as in evaluation
    one = explain(model, wave, TEXT, clip_seconds=1.0)
    assert one.levels[0].time_edges[-1] == pytest.approx(1.0, abs=1e-3)


def test_figures_are_written_atomically_and_not_trivial(expl, tmp_path):
    files = save_figures(expl, tmp_path / "figs")
    assert [f.name for f in files] == ["tha_level1.png", "tha_level2.png", "tha_level3.png", "factors.png"]
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(f.name for f in files)  # no temp left


@pytest.mark.parametrize("head,has_tha,has_factors", [("dp", False, False), ("tha", True, False),
                                                      ("dcr", False, True)])
def test_fields_a_head_lacks_are_none(tiny_model_config, wave, tmp_path, head, has_tha, has_factors):
    m = tiny(tiny_model_config, head, **({"factors": 4} if head == "dcr" else {}))
    e = explain(m, wave, TEXT)
    text_r, audio_r = reference_reprs(m, wave)
    assert e.score == pytest.approx(float(m.score(text_r, audio_r)[0, 0]), abs=1e-5)
    assert (e.levels is not None) == has_tha and (e.words is not None) == has_tha
    assert (e.tha_score is not None) == has_tha
    for f in (e.factor_similarity, e.confidence, e.factor_contribution, e.dcr_score):
        assert (f is not None) == has_factors
    if head == "dcr":
        assert e.factor_contribution.sum() == pytest.approx(e.score, abs=1e-5)
    if head == "dp":
        assert save_figures(e, tmp_path) == []


def test_bad_inputs_raise_input_error(model, wave, tmp_path):
    with pytest.raises(InputError, match="file not found"):
        explain(model, tmp_path / "missing.wav", TEXT)
    (tmp_path / "notes.wav").write_text("this is not audio")
    with pytest.raises(InputError, match="notes.wav"):
        explain(model, tmp_path / "notes.wav", TEXT)
    for text in ("", "   ", None):
        with pytest.raises(InputError, match="text"):
            explain(model, wave, text)
    for bad in (np.zeros(0), np.zeros((2, 100)), np.full(4000, np.nan), np.array(["a", "b"]), [0.0, 1.0]):
        with pytest.raises(InputError):
            explain(model, bad, TEXT)
    for seconds in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="clip_seconds"):
            explain(model, wave, TEXT, clip_seconds=seconds)


def test_cli_helpers_write_figures_json_and_summary(model, wave, tmp_path, capsys):
    from hade.checkpoint import save_model

    save_model(model, tmp_path / "ckpt")
    sf.write(tmp_path / "clip.wav", wave, model.sample_rate, subtype="FLOAT")
    parser = argparse.ArgumentParser()
    add_explain_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "out"
    args = parser.parse_args(["explain", "--ckpt", str(tmp_path / "ckpt"), "--audio", str(tmp_path / "clip.wav"),
                              "--text", TEXT, "--out", str(out), "--json"])
    assert args.out == out and args.json
    assert cmd_explain(args) == 0
    printed = capsys.readouterr().out
    assert "score" in printed and "level 1" in printed and "CA weights" in printed
    assert str(out / "tha_level1.png") in printed and str(out / "explanation.json") in printed
    data = json.loads((out / "explanation.json").read_text())
    direct = explain(model, tmp_path / "clip.wav", TEXT)
    assert data["score"] == pytest.approx(direct.score, abs=1e-5) and data["words"] == direct.words
    assert np.allclose(data["levels"][0]["text_to_audio"], direct.levels[0].text_to_audio, atol=1e-6)
    assert len(data["confidence"]) == 4
    defaults = parser.parse_args(["explain", "--ckpt", "c", "--audio", "a.wav", "--text", "t"])
    assert str(defaults.out) == "explain-out" and not defaults.json
    for argv, message in ((["--audio", str(tmp_path / "nope.wav"), "--text", TEXT], "nope.wav"),
                          (["--audio", str(tmp_path / "clip.wav"), "--text", " "], "empty")):
        bad = parser.parse_args(["explain", "--ckpt", str(tmp_path / "ckpt"), *argv])
        with pytest.raises(InputError, match=message):
            cmd_explain(bad)


# ---- words from word pieces, level names ---------------------------------------------------------------
def _roberta_tokenizer(folder):
    from _scripts import load_script

    from hade.models.encoders.text_bert import load_tokenizer

    return load_tokenizer(load_script("benchmarks/_laion_reference.py").write_tiny_roberta_tokenizer(folder))


@pytest.mark.parametrize("fast", [True, False])
def test_byte_level_pieces_become_words_by_the_tokenizers_own_decoding(tmp_path, fast):
    from types import SimpleNamespace

    from hade.explain import _TokenWords

    tok = _roberta_tokenizer(tmp_path / "tok")
    text = "a dog barks loudly"
    ids = tok([text])["input_ids"][0]
    pieces = tok.convert_ids_to_tokens(ids)
    assert "\u0120dog" in pieces and "\u0120bar" in pieces  # byte-level pieces: "Ġdog", "Ġbar" "ks"
    if not fast:  # the fallback for slow tokenizers: where decoding starts a word
        tok = SimpleNamespace(is_fast=False, convert_ids_to_tokens=tok.convert_ids_to_tokens, decode=tok.decode)
    words = _TokenWords(SimpleNamespace(tokenizer=tok, config=SimpleNamespace(max_text_tokens=77)), text, ids)
    inner = list(range(1, len(ids) - 1))  # without <s> and </s>
    grouped = words.words(inner)
    assert [w for w, _ in grouped] == ["a", "dog", "barks", "loudly"]
    assert sum((g for _, g in grouped), []) == list(range(len(inner)))  # every piece in one word, in order


def test_level_names_come_from_the_encoders(tiny_model_config):
    from transformers import RobertaConfig, RobertaModel

    from hade.models.encoders.text_bert import TextEncoder

    model = tiny(tiny_model_config, "tha")
    assert model.audio_encoder.level_name(3) == "HTSAT stage 3"
    assert model.text_encoder.level_name(2) == "BERT block 2"
    roberta = RobertaModel(RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32))
    assert TextEncoder(roberta).level_name(6) == "RoBERTa block 6"
    e = explain(model, np.zeros(model.sample_rate, dtype=np.float32), "a dog barks")
    assert [(lv.audio_name, lv.text_name) for lv in e.levels] == [
        (f"HTSAT stage {lv.audio_stage}", f"BERT block {lv.text_block}") for lv in e.levels]
