"""The DCASE 2025 baseline's released retrieval checkpoint (hade.models.convert_dcase) through `convert_dcase`,
`hade convert` and `--init-from`: a synthetic Lightning checkpoint with the baseline's attribute names
(d25_t6/retrieval_module.py: audio_embedding_model.model.model = hear21passt's PaSST, text_embedding_model =
RobertaModel without pooler, audio_projection / text_projection Linear, tau) at tiny sizes (passt-test, a
2-block RoBERTa): every tensor lands where it should, the text and audio vectors follow the baseline's
formulas, partial and foreign checkpoints are refused."""
from __future__ import annotations

import importlib.util
import string
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import hade
from hade.cli import main
from hade.config import ModelConfig
from hade.errors import InputError
from hade.models.convert_audio import detect_audio_kind
from hade.models.convert_dcase import convert_dcase, is_dcase_checkpoint
from hade.models.encoders.audio import audio_encoder_config, build_audio_encoder
from hade.train.init import initialise_from

_ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("_laion_reference", _ROOT / "benchmarks" / "_laion_reference.py")
_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ref)

EMBED, TAU = 24, 0.05
AUDIO, TEXT = "audio_embedding_model.model.model.", "text_embedding_model."
CAPTIONS = ["A dog, barks!", "bar dog ks in the bar"]


def _roberta_config(vocab_size: int):
    from transformers import RobertaConfig

    return RobertaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=40, type_vocab_size=1, pad_token_id=1,
                         bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory) -> Path:
    """A local HF RoBERTa folder (tokenizer files, config.json, random weights): a tiny roberta-large stand-in."""
    from transformers import AutoTokenizer, RobertaModel

    folder = _ref.write_tiny_roberta_tokenizer(tmp_path_factory.mktemp("roberta") / "roberta")
    torch.manual_seed(5)
    RobertaModel(_roberta_config(len(AutoTokenizer.from_pretrained(folder))), add_pooling_layer=False) \
        .save_pretrained(folder)
    return folder


def _baseline(roberta_dir: Path, compiled: bool = False, seed: int = 0) -> dict:
    """A Lightning-style checkpoint with the baseline's names (``_orig_mod.`` where torch.compile wrapped the
    PaSST and the RoBERTa) and random tensors; ``expected`` maps each source key to its hade name."""
    from transformers import AutoConfig, RobertaModel

    torch.manual_seed(seed)
    passt = build_audio_encoder(audio_encoder_config("passt-test"))
    roberta = RobertaModel(AutoConfig.from_pretrained(roberta_dir), add_pooling_layer=False)
    audio, text = (AUDIO + "_orig_mod.", TEXT + "_orig_mod.") if compiled else (AUDIO, TEXT)
    state, expected = {}, {}
    for k, v in passt.state_dict().items():
        state[audio + k] = v.clone()
        expected[audio + k] = "audio_encoder." + k
    for k, v in roberta.state_dict().items():
        state[text + k] = v.clone()
        if k not in ("embeddings.position_ids", "embeddings.token_type_ids"):
            expected[text + k] = "text_encoder.bert." + k
    for side, width in (("audio", 32), ("text", 32)):
        state[f"{side}_projection.weight"] = torch.randn(EMBED, width)
        state[f"{side}_projection.bias"] = torch.randn(EMBED)
        expected[f"{side}_projection.weight"] = f"head.{side}_proj.0.weight"
        expected[f"{side}_projection.bias"] = f"head.{side}_proj.0.bias"
    state.update({audio + "head.0.weight": torch.ones(32), audio + "head.0.bias": torch.zeros(32),
                  audio + "head.1.weight": torch.zeros(527, 32), audio + "head.1.bias": torch.zeros(527),
                  audio + "head_dist.weight": torch.zeros(527, 32), audio + "head_dist.bias": torch.zeros(527),
                  "tau": torch.tensor([-TAU])})  # the baseline divides by |tau|
    return {"state_dict": state, "epoch": 19, "global_step": 100, "hyper_parameters": {"initial_tau": TAU},
            "expected": expected}


def _checkpoint(baseline: dict) -> dict:
    return {k: v for k, v in baseline.items() if k != "expected"}


@pytest.mark.parametrize("compiled", [False, True])
def test_every_baseline_tensor_lands_in_its_place(roberta_dir, compiled):
    baseline = _baseline(roberta_dir, compiled)
    obj = _checkpoint(baseline)
    assert is_dcase_checkpoint(obj) and detect_audio_kind(obj) == "dcase2025"
    model, report = convert_dcase(obj, roberta_dir, audio_encoder="passt-test")
    assert report.loaded and report.complete and not report.unexpected
    own = model.state_dict()
    source = {k.replace("._orig_mod.", "."): v for k, v in obj["state_dict"].items()}
    for key, name in baseline["expected"].items():
        assert torch.equal(own[name], source[key.replace("._orig_mod.", ".")]), (key, name)
    assert set(report.matched) == set(own)  # every model tensor came from the checkpoint
    assert sorted(report.skipped) == sorted(
        [AUDIO + p for p in ("head.0.weight", "head.0.bias", "head.1.weight", "head.1.bias", "head_dist.weight",
                             "head_dist.bias")] + ["tau"]
        + [TEXT + p for p in ("embeddings.position_ids", "embeddings.token_type_ids") if TEXT + p in source])
    cfg = model.config
    assert (cfg.head, cfg.head_options["projection"], cfg.embed_dim) == ("dp", "linear", EMBED)
    assert abs(cfg.head_options["logit_scale"] - 1 / TAU) < 1e-4 and report.scalars["tau"] == pytest.approx(TAU)
    assert (cfg.text_pooling, cfg.max_text_tokens, cfg.caption_normalize) == ("cls", 32, "dcase")
    assert cfg.text_config["model_type"] == "roberta" and cfg.audio_encoder == "passt-test"


def test_vectors_follow_the_baseline_formulas(roberta_dir):
    """Text: lower case, no punctuation, RoBERTa's first token, Linear, L2; audio: PaSST's clip vector, Linear, L2."""
    from transformers import AutoTokenizer, RobertaModel

    obj = _checkpoint(_baseline(roberta_dir, seed=1))
    state = obj["state_dict"]
    model, _ = convert_dcase(obj, roberta_dir, audio_encoder="passt-test")
    roberta = RobertaModel.from_pretrained(roberta_dir, add_pooling_layer=False).eval()
    roberta.load_state_dict({k[len(TEXT):]: v for k, v in state.items() if k.startswith(TEXT)}, strict=False)
    tokenizer = AutoTokenizer.from_pretrained(roberta_dir)
    clean = [c.lower().translate(str.maketrans("", "", string.punctuation)) for c in CAPTIONS]
    batch = tokenizer(clean, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    passt = build_audio_encoder(audio_encoder_config("passt-test")).eval()
    passt.load_state_dict({k[len(AUDIO):]: v for k, v in state.items()
                           if k.startswith(AUDIO) and ".head" not in "." + k[len(AUDIO):]})
    wave = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = roberta(input_ids=batch.input_ids, attention_mask=batch.attention_mask)[0][:, 0]
        text_ref = F.normalize(F.linear(first, state["text_projection.weight"], state["text_projection.bias"]), dim=-1)
        audio_ref = F.normalize(F.linear(passt(wave).pooled, state["audio_projection.weight"],
                                         state["audio_projection.bias"]), dim=-1)
        text, audio = model.encode_text(CAPTIONS)["embed"], model.encode_audio(wave)["embed"]
    torch.testing.assert_close(text, text_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(audio, audio_ref, atol=1e-5, rtol=0)

    # a longer clip: the baseline's 30 s input is three segments of the encoder's input (2 s for passt-test),
    # whose clip vectors are averaged over those holding audio: the first (<= 1 segment), the first two
    # (<= 2) or all three, before the projection
    seg = passt.max_samples
    durations = [seg // 2, seg + 1, 3 * seg]
    long = torch.zeros(3, 3 * seg)
    for row, n in enumerate(durations):
        long[row, :n] = torch.randn(n, generator=torch.Generator().manual_seed(row))
    with torch.no_grad():
        per_segment = torch.stack([passt(long[:, k * seg:(k + 1) * seg]).pooled for k in range(3)], 1)
        pooled = torch.stack([per_segment[0, 0], per_segment[1, :2].mean(0), per_segment[2].mean(0)])
        long_ref = F.normalize(F.linear(pooled, state["audio_projection.weight"], state["audio_projection.bias"]),
                               dim=-1)
        got = model.encode_audio(long, lengths=torch.tensor(durations))["embed"]
    torch.testing.assert_close(got, long_ref, atol=1e-5, rtol=0)
    assert model.config.clip_seconds == 30.0  # what `hade eval` encodes of a clip by default, as the baseline


def test_partial_and_foreign_checkpoints_are_refused(roberta_dir):
    obj = _checkpoint(_baseline(roberta_dir))
    del obj["state_dict"][AUDIO + "blocks.1.mlp.fc2.weight"]
    obj["state_dict"]["text_projection.weight"] = torch.zeros(EMBED, 16)
    with pytest.raises(InputError, match="refusing a partial load") as err:
        convert_dcase(obj, roberta_dir, audio_encoder="passt-test")
    assert "audio_encoder.blocks.1.mlp.fc2.weight" in str(err.value) and "head.text_proj.0.weight" in str(err.value)
    _, report = convert_dcase(obj, roberta_dir, audio_encoder="passt-test", allow_partial=True)
    assert report.missing == ["audio_encoder.blocks.1.mlp.fc2.weight"]
    assert set(report.mismatched) == {"head.text_proj.0.weight"} and not report.complete

    extra = _checkpoint(_baseline(roberta_dir))
    extra["state_dict"][TEXT + "pooler.dense.weight"] = torch.zeros(32, 32)
    with pytest.raises(InputError, match="no place in the converted dcase2025 model.*pooler"):
        convert_dcase(extra, roberta_dir, audio_encoder="passt-test")
    no_tau = _checkpoint(_baseline(roberta_dir))
    del no_tau["state_dict"]["tau"]
    with pytest.raises(InputError, match="without its temperature"):
        convert_dcase(no_tau, roberta_dir, audio_encoder="passt-test")
    laion = {"state_dict": {"audio_branch.patch_embed.proj.weight": torch.zeros(96, 1, 4, 4)}}
    with pytest.raises(InputError, match="not a DCASE 2025 baseline checkpoint"):
        convert_dcase(laion, roberta_dir, audio_encoder="passt-test")
    with pytest.raises(InputError, match="builds a htsat one"):
        convert_dcase(_checkpoint(_baseline(roberta_dir)), roberta_dir, audio_encoder="htsat-test")


def test_hade_convert_complete_and_audio_only(roberta_dir, tmp_path, capsys):
    obj = _checkpoint(_baseline(roberta_dir))
    file = tmp_path / "d25.ckpt"
    torch.save(obj, file)
    assert main(["convert", str(file), "--out", str(tmp_path / "full"), "--tokenizer", str(roberta_dir),
                 "--audio-encoder", "passt-test"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint kind: dcase2025" in out and "logit_scale=20" in out and "loaded: yes" in out
    loaded = hade.load(tmp_path / "full")
    assert loaded.config.caption_normalize == "dcase" and loaded.config.head_options["projection"] == "linear"
    torch.testing.assert_close(loaded.head.text_proj[0].weight, obj["state_dict"]["text_projection.weight"])

    assert main(["convert", str(file), "--out", str(tmp_path / "audio"), "--audio-encoder", "passt-test"]) == 0
    out = capsys.readouterr().out
    assert "only the audio encoder was converted" in out and "RoBERTa / projections" in out
    audio_only = hade.load(tmp_path / "audio")
    torch.testing.assert_close(audio_only.audio_encoder.norm.weight, obj["state_dict"][AUDIO + "norm.weight"])
    assert main(["convert", str(file), "--out", str(tmp_path / "bad"), "--audio-encoder", "htsat-test"]) == 2
    assert "holds a passt audio encoder" in capsys.readouterr().err


def test_init_from_the_baseline_file(roberta_dir, tmp_path):
    obj = _checkpoint(_baseline(roberta_dir, compiled=True))
    file = tmp_path / "d25.ckpt"
    torch.save(obj, file)
    state = {k.replace("._orig_mod.", "."): v for k, v in obj["state_dict"].items()}
    run = ModelConfig(audio_encoder="passt-test", text_encoder=str(roberta_dir), head="tha+dcr",
                      head_options={"projection": "linear"}, embed_dim=EMBED, max_text_tokens=32,
                      caption_normalize="dcase")
    model = hade.create_model(run)
    info = initialise_from(model, file)
    assert info.kind == "dcase2025" and info.scalars["tau"] == pytest.approx(TAU)
    assert info.parts["audio_encoder"] == info.parts["text_encoder"] == "checkpoint"
    assert info.parts["head.parts.tha"] == "fresh"
    torch.testing.assert_close(model.head.parts["dcr"].audio_proj[0].weight, state["audio_projection.weight"])
    torch.testing.assert_close(model.text_encoder.bert.encoder.layer[1].output.dense.weight,
                               state[TEXT + "encoder.layer.1.output.dense.weight"])
    torch.testing.assert_close(model.audio_encoder.blocks[2].attn.qkv.weight, state[AUDIO + "blocks.2.attn.qkv.weight"])

    mlp = hade.create_model(ModelConfig(audio_encoder="passt-test", text_encoder=str(roberta_dir), head="dp",
                                        embed_dim=EMBED))
    before = mlp.head.audio_proj[0].weight.clone()
    info = initialise_from(mlp, file)  # Linear-ReLU-Linear: the baseline's one Linear does not start it
    assert info.parts["head"] == "fresh" and "head.audio_proj.0.weight" in info.unused
    assert torch.equal(mlp.head.audio_proj[0].weight, before)

    minilm = hade.create_model(ModelConfig(audio_encoder="passt-test", text_pretrained=False, embed_dim=EMBED,
                                           text_overrides={"num_hidden_layers": 1, "hidden_size": 32,
                                                           "num_attention_heads": 2, "intermediate_size": 64}))
    with pytest.raises(InputError, match="encoder tensor\\(s\\) missing or of another shape"):
        initialise_from(minilm, file)
    htsat = hade.create_model(ModelConfig(audio_encoder="htsat-test", text_encoder=str(roberta_dir)))
    with pytest.raises(InputError, match="builds a htsat one"):
        initialise_from(htsat, file)


def test_dp_and_dcr_heads_take_a_linear_projection():
    from hade.models.encoders.types import AudioLevels
    from hade.models.heads import build_head

    levels = AudioLevels.swin_stages([16, 32, 64, 128])
    dp = build_head("dp", levels, 32, 2, 16, {"projection": "linear"})
    assert [k for k in dp.state_dict() if "proj" in k] == ["audio_proj.0.weight", "audio_proj.0.bias",
                                                           "text_proj.0.weight", "text_proj.0.bias"]
    both = build_head("tha+dcr", levels, 32, 2, 16, {"projection": "linear"})
    assert not any(k.startswith("parts.dcr.audio_proj.2") for k in both.state_dict())
    assert "parts.dcr.audio_proj.2.weight" in build_head("tha+dcr", levels, 32, 2, 16).state_dict()
    with pytest.raises(InputError, match="projection must be one of"):
        build_head("dp", levels, 32, 2, 16, {"projection": "deep"})
