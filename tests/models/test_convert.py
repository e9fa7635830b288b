"""Key maps for foreign HTSAT checkpoints (synthetic state dicts; no laion_clap needed)."""
from __future__ import annotations

import collections

import pytest
import torch
from safetensors.torch import save_file

from hade.checkpoint import convert_checkpoint
from hade.errors import InputError
from hade.models.convert import (
    format_report,
    load_audio_checkpoint,
    map_state_dict,
    read_checkpoint,
)
from hade.models.encoders.htsat import build_htsat


def _encoder(seed: int = 0):
    torch.manual_seed(seed)
    enc = build_htsat("htsat-test").eval()
    with torch.no_grad():
        enc.bn0.running_mean.uniform_(-1, 1)
    return enc


def _foreign(source, kind: str) -> dict:
    """Source encoder's state dict renamed to a foreign convention plus that convention's extra keys."""
    sd = source.state_dict()
    extra_enc = {"spectrogram_extractor.stft.conv_real.weight": torch.zeros(129, 1, 256),
                 "spectrogram_extractor.stft.conv_imag.weight": torch.zeros(129, 1, 256),
                 "logmel_extractor.melW": torch.zeros(129, 32),
                 "tscam_conv.weight": torch.zeros(527, 128, 2, 3), "tscam_conv.bias": torch.zeros(527),
                 "head.weight": torch.zeros(527, 527), "head.bias": torch.zeros(527)}
    enc = {**sd, **extra_enc}
    if kind == "htsat":
        return enc
    if kind == "htsat-lightning":
        return {"state_dict": {f"sed_model.{k}": v for k, v in enc.items()}, "epoch": 3}
    if kind == "laion-clap":
        state = {f"audio_branch.{k}": v for k, v in enc.items()}
        state.update({"text_branch.embeddings.word_embeddings.weight": torch.zeros(10, 4),
                      "text_branch.embeddings.position_ids": torch.arange(4),
                      "audio_projection.0.weight": torch.zeros(8, 128), "audio_projection.2.bias": torch.zeros(8),
                      "text_projection.0.weight": torch.zeros(8, 4), "logit_scale_a": torch.tensor(2.0),
                      "logit_scale_t": torch.tensor(2.0)})
        return {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 1, "name": "x"}
    if kind == "wavcaps":
        state = {f"audio_encoder.audio_enc.{k}": v for k, v in enc.items()}
        state.update({"text_encoder.text_encoder.embeddings.word_embeddings.weight": torch.zeros(10, 4),
                      "audio_proj.0.weight": torch.zeros(8, 128), "text_proj.2.weight": torch.zeros(8, 8),
                      "temp": torch.tensor(0.07)})
        return {"model": state, "epoch": 2, "config": {"embed_size": 1024}}
    raise AssertionError(kind)


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("kind", ["htsat", "htsat-lightning", "laion-clap", "wavcaps"])
def test_each_convention_loads_exactly(tmp_path, kind):
    src, dst = _encoder(0), _encoder(1)
    path = tmp_path / "ckpt.pt"
    torch.save(_foreign(src, kind), path)
    report = load_audio_checkpoint(dst, path)
    assert report.kind == kind and report.loaded and report.complete
    assert not report.missing and not report.mismatched
    assert len(report.matched) == len(src.state_dict())
    _assert_same(src, dst)
    wav = torch.randn(2, 8000)
    with torch.no_grad():
        assert torch.equal(src(wav).pooled, dst(wav).pooled)
    # the front end and the tagging head are skipped with reasons
    assert sum("spectrogram_extractor" in k for k in report.skipped) == 2
    assert any("recomputes" in r for k, r in report.skipped.items() if "logmel_extractor" in k)
    assert any("TSCAM" in r for k, r in report.skipped.items() if "tscam_conv" in k)
    if kind == "laion-clap":
        assert report.stripped_module_prefix
        assert "RoBERTa" in report.unexpected["text_branch.embeddings.word_embeddings.weight"]
        assert "audio_projection.0.weight" in report.unexpected and "logit_scale_a" in report.unexpected
    if kind == "wavcaps":
        assert "temp" in report.unexpected and "text_encoder.text_encoder.embeddings.word_embeddings.weight" in report.unexpected
    text = format_report(report)
    assert "skipped" in text and kind in text


def test_safetensors_and_module_prefix(tmp_path):
    src, dst = _encoder(0), _encoder(1)
    flat = {f"module.{k}": v.contiguous() for k, v in src.state_dict().items()}
    save_file(flat, str(tmp_path / "w.safetensors"))
    report = load_audio_checkpoint(dst, tmp_path / "w.safetensors")
    assert report.kind == "htsat" and report.stripped_module_prefix and report.complete
    _assert_same(src, dst)


def test_missing_keys_refused_then_allow_partial(tmp_path):
    src, dst = _encoder(0), _encoder(1)
    state = _foreign(src, "htsat-lightning")
    del state["state_dict"]["sed_model.norm.weight"]
    del state["state_dict"]["sed_model.layers.1.blocks.0.attn.qkv.weight"]
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    torch.save(state, tmp_path / "p.ckpt")
    with pytest.raises(InputError) as e:
        load_audio_checkpoint(dst, tmp_path / "p.ckpt")
    assert "norm.weight" in str(e.value) and "layers.1.blocks.0.attn.qkv.weight" in str(e.value)
    assert "allow_partial" in str(e.value)
    for k, v in dst.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k]), k
    report = load_audio_checkpoint(dst, tmp_path / "p.ckpt", allow_partial=True)
    assert sorted(report.missing) == ["layers.1.blocks.0.attn.qkv.weight", "norm.weight"]
    assert report.loaded and not report.complete and "PARTIAL" in format_report(report)
    assert torch.equal(dst.norm.weight, before["norm.weight"])
    assert torch.equal(dst.patch_embed.proj.weight, src.patch_embed.proj.weight)


def test_shape_mismatch_refused():
    src = build_htsat("htsat-test", embed_dim=24, num_heads=[1, 2, 4, 8])
    mapped, report = map_state_dict(src.state_dict())
    from hade.models.convert import apply_state_dict

    with pytest.raises(InputError, match="MISMATCHED"):
        apply_state_dict(_encoder(1), mapped, report)


def test_derived_buffers_optional():
    src, dst = _encoder(0), _encoder(1)
    state = {k: v for k, v in src.state_dict().items()
             if not k.endswith(("relative_position_index", "attn_mask", "num_batches_tracked"))}
    from hade.models.convert import apply_state_dict

    mapped, report = map_state_dict(state, kind="htsat")
    apply_state_dict(dst, mapped, report)
    assert report.complete and report.recomputed
    _assert_same(src, dst)


def test_unknown_layout_and_kind():
    with pytest.raises(InputError, match="unrecognised"):
        map_state_dict({"foo.weight": torch.zeros(1)})
    with pytest.raises(InputError, match="unknown checkpoint kind"):
        map_state_dict({"patch_embed.proj.weight": torch.zeros(1)}, kind="nope")


Evil = collections.namedtuple("Evil", "a b")  # a custom class: not allowed by weights_only


def test_weights_only_refuses_custom_classes(tmp_path):
    src, dst = _encoder(0), _encoder(1)
    torch.save({"state_dict": {f"sed_model.{k}": v for k, v in src.state_dict().items()}, "cfg": Evil(1, 2)},
               tmp_path / "evil.ckpt")
    with pytest.raises(InputError, match="weights_only"):
        load_audio_checkpoint(dst, tmp_path / "evil.ckpt")
    with pytest.raises(InputError, match="no such"):
        load_audio_checkpoint(dst, tmp_path / "absent.ckpt")


def test_convert_checkpoint_round_trip(tmp_path, tiny_model_config):
    import hade

    src = _encoder(0)
    torch.save(_foreign(src, "wavcaps"), tmp_path / "wc.pt")
    report = convert_checkpoint(tmp_path / "wc.pt", tmp_path / "out", tiny_model_config)
    assert report.complete and report.loaded
    model = hade.load(tmp_path / "out")
    wav = torch.randn(1, 8000)
    with torch.no_grad():
        assert torch.allclose(model.audio_encoder(wav).pooled, src(wav).pooled)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_safetensors_named(tmp_path, damage):
    path = tmp_path / "clap.safetensors"
    save_file({"audio_branch.patch_embed.proj.weight": torch.zeros(4, 4)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 16)
    with pytest.raises(InputError, match=r"clap\.safetensors: truncated or corrupt safetensors file"):
        read_checkpoint(path)


def test_hade_convert_command(tmp_path, capsys):
    """`hade convert` (now an application module, hade.apps.convert) writes the same checkpoint."""
    import hade
    from hade.cli import main

    src = _encoder(0)
    torch.save(_foreign(src, "wavcaps"), tmp_path / "wc.pt")
    assert main(["convert", str(tmp_path / "wc.pt"), "--out", str(tmp_path / "out"), "--audio-encoder",
                 "htsat-test", "--head", "tha"]) == 0
    printed = capsys.readouterr().out
    assert "wavcaps" in printed and f"wrote {tmp_path / 'out'}" in printed
    model = hade.load(tmp_path / "out")
    assert model.config.head == "tha" and model.config.audio_encoder == "htsat-test"
    wav = torch.randn(1, 8000)
    with torch.no_grad():
        assert torch.allclose(model.audio_encoder(wav).pooled, src(wav).pooled)
    assert main(["convert", str(tmp_path / "wc.pt"), "--out", str(tmp_path / "o2"), "--audio-overrides", "[1]"]) == 2
    assert "hade convert: error: --audio-overrides must be a JSON object" in capsys.readouterr().err


def test_hade_convert_never_deletes_what_it_did_not_write(tmp_path, capsys):
    """An --out holding anything but a hade checkpoint is refused unless --force; replacing a checkpoint is
    said; a checkpoint folder with the user's files in it is refused too (the new one would replace them)."""
    import hade
    from hade.cli import main

    torch.save(_foreign(_encoder(0), "wavcaps"), tmp_path / "wc.pt")
    base = ["convert", str(tmp_path / "wc.pt"), "--audio-encoder", "htsat-test", "--head", "dp"]
    out = tmp_path / "models"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main([*base, "--out", str(out)]) == 2
    assert "exists and is not a hade checkpoint (it holds notes.txt)" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
    ckpt = tmp_path / "ckpt"
    assert main([*base, "--out", str(ckpt)]) == 0
    assert "replaced" not in capsys.readouterr().out
    assert main([*base, "--out", str(ckpt)]) == 0
    assert f"wrote {ckpt} (replaced the hade checkpoint that was there)" in capsys.readouterr().out
    (ckpt / "README.md").write_text("my notes on this model")
    assert main([*base, "--out", str(ckpt)]) == 2
    assert "also holds README.md" in capsys.readouterr().err and (ckpt / "README.md").is_file()
    assert main([*base, "--out", str(out), "--force"]) == 0
    assert "--force: replaced what was there" in capsys.readouterr().out
    assert not (out / "notes.txt").exists() and hade.load(out).config.audio_encoder == "htsat-test"
