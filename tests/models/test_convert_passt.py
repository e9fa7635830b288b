"""PaSST checkpoints (hear21passt's layout) through `hade convert`, `convert_checkpoint` and `--init-from`:
the matched/skipped report, a refused partial load, a checkpoint of another architecture refused."""
import dataclasses

import pytest
import torch

import hade
from hade.checkpoint import convert_checkpoint
from hade.cli import main
from hade.errors import InputError
from hade.models.convert_audio import detect_audio_kind, load_audio_state_dict
from hade.models.encoders.audio import audio_encoder_config, build_audio_encoder
from hade.train.init import initialise_from


def _passt_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    """A PaSST AudioSet-style state dict: the encoder's tensors, the classifier heads, in hear21passt's
    wrapper (`net.`) and DataParallel (`module.`) prefixes."""
    torch.manual_seed(seed)
    enc = build_audio_encoder(audio_encoder_config("passt-test"))
    state = {f"module.net.{k}": v for k, v in enc.state_dict().items()}
    state.update({"module.net.head.0.weight": torch.ones(32), "module.net.head.0.bias": torch.zeros(32),
                  "module.net.head.1.weight": torch.zeros(527, 32), "module.net.head.1.bias": torch.zeros(527),
                  "module.net.head_dist.weight": torch.zeros(527, 32), "module.net.head_dist.bias": torch.zeros(527)})
    return state


@pytest.fixture()
def ckpt_file(tmp_path):
    path = tmp_path / "passt.pt"
    torch.save(_passt_checkpoint(), path)
    return path


def test_detected_mapped_and_reported(ckpt_file):
    state = torch.load(ckpt_file, weights_only=True)
    assert detect_audio_kind(state) == "passt"
    enc = build_audio_encoder(audio_encoder_config("passt-test"))
    report = load_audio_state_dict(enc, state, "passt")
    assert report.loaded and report.complete and report.stripped_module_prefix
    assert len(report.matched) == len(enc.state_dict())
    assert set(report.skipped) == {k[len("module."):] for k in state if ".head" in k}  # named after `module.` stripping
    torch.testing.assert_close(enc.blocks[2].attn.qkv.weight, state["module.net.blocks.2.attn.qkv.weight"])


def test_partial_load_is_refused_unless_allowed(ckpt_file):
    state = torch.load(ckpt_file, weights_only=True)
    del state["module.net.blocks.1.mlp.fc2.weight"]
    state["module.net.time_new_pos_embed"] = state["module.net.time_new_pos_embed"][..., :5]
    enc = build_audio_encoder(audio_encoder_config("passt-test"))
    with pytest.raises(InputError, match="refusing a partial load of the passt encoder") as err:
        load_audio_state_dict(enc, state, "passt")
    assert "blocks.1.mlp.fc2.weight" in str(err.value) and "time_new_pos_embed" in str(err.value)
    report = load_audio_state_dict(enc, state, "passt", allow_partial=True)
    assert report.missing == ["blocks.1.mlp.fc2.weight"] and set(report.mismatched) == {"time_new_pos_embed"}
    assert report.loaded and not report.complete


def test_convert_and_init_from(ckpt_file, tmp_path, tiny_model_config, capsys):
    config = dataclasses.replace(tiny_model_config, audio_encoder="passt-test", head="tha+dcr")
    report = convert_checkpoint(ckpt_file, tmp_path / "out", config)
    assert report.kind == "passt" and report.complete
    model = hade.load(tmp_path / "out")
    expected = torch.load(ckpt_file, weights_only=True)["module.net.norm.weight"]
    torch.testing.assert_close(model.audio_encoder.norm.weight, expected)

    fresh = hade.create_model(config)
    info = initialise_from(fresh, ckpt_file)
    assert info.kind == "passt" and info.loaded == len(fresh.audio_encoder.state_dict())
    torch.testing.assert_close(fresh.audio_encoder.blocks[0].attn.proj.weight,
                               model.audio_encoder.blocks[0].attn.proj.weight)
    htsat = hade.create_model(tiny_model_config)
    with pytest.raises(InputError, match="holds a passt audio encoder but the preset builds a htsat"):
        initialise_from(htsat, ckpt_file)

    assert main(["convert", str(ckpt_file), "--out", str(tmp_path / "cli"), "--audio-encoder", "passt-test",
                 "--head", "dp"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint kind: passt" in out and "skipped (6)" in out and "loaded: yes" in out
    assert main(["convert", str(ckpt_file), "--out", str(tmp_path / "bad"), "--audio-encoder", "htsat-test"]) == 2
    assert "holds a passt audio encoder" in capsys.readouterr().err
