"""Starting a run from existing weights: hade checkpoint directories and foreign HTSAT files."""
import json

import pytest
import torch

import hade
from hade.checkpoint import save_model
from hade.config import ModelConfig, TrainConfig
from hade.data.synthcaps import generate
from hade.errors import InputError
from hade.train.init import initialise_from
from hade.train.trainer import train


def _model(config: ModelConfig, seed: int, **changes):
    torch.manual_seed(seed)
    return hade.create_model(ModelConfig(**{**config.__dict__, **changes}))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_dir_loads_every_matching_tensor(tmp_path, tiny_model_config):
    source = _model(tiny_model_config, 0)
    save_model(source, tmp_path / "ckpt")
    target = _model(tiny_model_config, 1)
    assert not _same(source, target)
    report = initialise_from(target, tmp_path / "ckpt")
    assert _same(source, target) and report["fresh"] == [] and report["kind"] == "hade"


def test_another_head_keeps_the_encoders_and_starts_new_head_tensors_fresh(tmp_path, tiny_model_config):
    source = _model(tiny_model_config, 0, head="tha")
    save_model(source, tmp_path / "ckpt")
    target = _model(tiny_model_config, 1, head="tha+dcr")
    report = initialise_from(target, tmp_path / "ckpt")
    assert _same(source.audio_encoder, target.audio_encoder) and _same(source.text_encoder, target.text_encoder)
    assert report["fresh"] and all(name.startswith("head.parts.dcr.") for name in report["fresh"])
    assert _same(source.head, target.head.parts["tha"])  # the THA part comes from the THA run
    # and back: a dcr run from a tha+dcr checkpoint takes that run's DCR part
    save_model(target, tmp_path / "sum")
    single = _model(tiny_model_config, 2, head="dcr")
    assert initialise_from(single, tmp_path / "sum")["fresh"] == []
    assert _same(single.head, target.head.parts["dcr"])


def test_a_differently_built_audio_encoder_is_refused(tmp_path, tiny_model_config):
    save_model(_model(tiny_model_config, 0), tmp_path / "ckpt")
    target = _model(tiny_model_config, 1, audio_overrides={"fmax": 3000.0})  # same shapes, other mel filters
    with pytest.raises(InputError, match="fmax"):
        initialise_from(target, tmp_path / "ckpt")


def test_a_different_text_encoder_is_refused(tmp_path, tiny_model_config):
    save_model(_model(tiny_model_config, 0), tmp_path / "ckpt")
    layers = {**tiny_model_config.text_overrides, "num_hidden_layers": 3}
    with pytest.raises(InputError, match="encoder tensor"):
        initialise_from(_model(tiny_model_config, 1, text_overrides=layers), tmp_path / "ckpt")


def test_foreign_htsat_file_loads_the_audio_encoder_only(tmp_path, tiny_model_config):
    source = _model(tiny_model_config, 0)
    state = {f"sed_model.{k}": v for k, v in source.audio_encoder.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "htsat.ckpt")
    target = _model(tiny_model_config, 1)
    text_before = {k: v.clone() for k, v in target.text_encoder.state_dict().items()}
    report = initialise_from(target, tmp_path / "htsat.ckpt")
    assert report["kind"] == "htsat-lightning" and _same(source.audio_encoder, target.audio_encoder)
    assert all(torch.equal(v, target.text_encoder.state_dict()[k]) for k, v in text_before.items())
    # a LAION-CLAP encoder needs LAION's 48 kHz front end
    torch.save({"state_dict": {f"audio_branch.{k}": v for k, v in source.audio_encoder.state_dict().items()}},
               tmp_path / "clap.pt")
    with pytest.raises(InputError, match="LAION's front end"):
        initialise_from(target, tmp_path / "clap.pt")
    with pytest.raises(InputError, match="no such checkpoint"):
        initialise_from(target, tmp_path / "missing.pt")


def test_training_starts_from_init_from_and_resume_ignores_it(tmp_path, tiny_model_config):
    data = tmp_path / "data"
    generate(data, clips=24, seed=0, sample_rate=8000, duration=1.0, progress=False)
    source = _model(tiny_model_config, 0)
    save_model(source, tmp_path / "ckpt")
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.0, text_lr=0.0, weight_decay=0.0, clip_seconds=1.0,
                      init_from=str(tmp_path / "ckpt"), model=ModelConfig(**tiny_model_config.__dict__), seed=5)
    train(data, tmp_path / "run", cfg, progress=False, stop_after_steps=1)
    report = json.loads((tmp_path / "run" / "init.json").read_text())
    assert report["loaded"] > 0 and report["fresh"] == []
    last = hade.load(tmp_path / "run" / "checkpoints" / "last")
    # lr 0: the saved weights are the initial ones, i.e. the checkpoint's (BatchNorm statistics aside)
    for name, value in source.state_dict().items():
        if "running_" not in name and "num_batches" not in name:
            assert torch.equal(value, last.state_dict()[name]), name
    (tmp_path / "run" / "init.json").unlink()
    train(data, tmp_path / "run", cfg, progress=False)
    assert not (tmp_path / "run" / "init.json").exists()  # a resumed run keeps its own weights
