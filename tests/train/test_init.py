"""Starting a run from existing weights: hade checkpoint directories and foreign HTSAT files."""
import json

import pytest
import torch

import hade
from hade.checkpoint import read_model_config, save_model
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
    assert _same(source, target) and report.fresh == [] and report.kind == "hade"


def test_another_head_keeps_the_encoders_and_starts_new_head_tensors_fresh(tmp_path, tiny_model_config):
    source = _model(tiny_model_config, 0, head="tha")
    save_model(source, tmp_path / "ckpt")
    target = _model(tiny_model_config, 1, head="tha+dcr")
    report = initialise_from(target, tmp_path / "ckpt")
    assert _same(source.audio_encoder, target.audio_encoder) and _same(source.text_encoder, target.text_encoder)
    assert report.fresh and all(name.startswith("head.parts.dcr.") for name in report.fresh)
    assert _same(source.head, target.head.parts["tha"])  # the THA part comes from the THA run
    # and back: a dcr run from a tha+dcr checkpoint takes that run's DCR part
    save_model(target, tmp_path / "sum")
    single = _model(tiny_model_config, 2, head="dcr")
    assert initialise_from(single, tmp_path / "sum").fresh == []
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
    assert report.kind == "htsat-lightning" and _same(source.audio_encoder, target.audio_encoder)
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


# ---- a converted model (hade convert --tokenizer) as the starting point of every head -----------------------

def _layout():
    from _scripts import load_script

    return load_script("tests/models/_wavcaps_layout.py")


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_model_config):
    """A complete WavCaps-layout checkpoint of a tiny random dp model, converted and saved as `hade convert`
    does; -> (checkpoint dir, the converted model)."""
    from hade.models.convert_full import convert_full

    root = tmp_path_factory.mktemp("converted")
    source = _model(tiny_model_config, 7, head="dp", text_config=None)
    source.tokenizer.save_pretrained(str(root / "tok"))
    heads = tiny_model_config.text_overrides["num_attention_heads"]
    model, report = convert_full(_layout().wavcaps_checkpoint_from_hade(source), root / "tok",
                                 text_overrides={"num_attention_heads": heads})
    save_model(model, root / "ckpt", extra={"converted_from": "wavcaps.pt", "conversion": report.to_dict()})
    return root / "ckpt", model


def test_adopt_encoders_takes_a_converted_models_encoders_only(converted, tiny_model_config, tmp_path):
    from hade.train.init import adopt_encoders

    ckpt, model = converted
    mine = ModelConfig(audio_encoder="htsat-cpu", head="tha+dcr", head_options={"lam": 0.5})
    adopted = adopt_encoders(mine, ckpt)
    assert adopted.head == "tha+dcr" and adopted.head_options == {"lam": 0.5}
    assert adopted.audio_encoder == model.config.audio_encoder
    assert adopted.audio_overrides == model.config.audio_overrides
    assert adopted.text_config == read_model_config(ckpt).text_config and adopted.embed_dim == model.config.embed_dim
    assert adopt_encoders(mine, None) is mine
    save_model(_model(tiny_model_config, 0), tmp_path / "plain")  # not converted: the run's own encoders stay
    assert adopt_encoders(mine, tmp_path / "plain") is mine


def test_every_head_starts_from_a_converted_model(converted):
    from hade.models.heads import HEADS
    from hade.train.init import adopt_encoders

    ckpt, model = converted
    for head in sorted(HEADS):
        torch.manual_seed(1)
        target = hade.create_model(adopt_encoders(ModelConfig(head=head), ckpt))
        report = initialise_from(target, ckpt)
        assert report.parts["audio_encoder"] == report.parts["text_encoder"] == "checkpoint", head
        assert _same(model.audio_encoder, target.audio_encoder) and _same(model.text_encoder, target.text_encoder)
        dp_part = "head" if head == "dp" else "head.parts.dp" if "dp" in head.split("+") and "ld" not in head else None
        if dp_part:  # the projections come from the checkpoint
            assert report.parts[dp_part] == "checkpoint", head
        else:
            assert all(not n.startswith(("audio_encoder.", "text_encoder.")) for n in report.fresh), head


def test_projections_go_to_heads_with_dps_pooled_projection_only(converted):
    """DCR (alone or in tha+dcr) takes a dp model's projections; THA, whose first text projection has the same
    name and shape as DP's first layer, does not take it."""
    from hade.train.init import adopt_encoders

    ckpt, model = converted
    for head, owner in (("tha+dcr", "head.parts.dcr."), ("dcr", "head."), ("tha", None)):
        torch.manual_seed(1)
        target = hade.create_model(adopt_encoders(ModelConfig(head=head), ckpt))
        report = initialise_from(target, ckpt)
        head_loaded = {n for n in target.state_dict() if n.startswith("head.")} - set(report.fresh)
        if owner is None:
            assert not head_loaded and "head.text_proj.0.weight" in report.fresh, head
            assert target.head.text_proj[0].weight.shape == model.head.text_proj[0].weight.shape  # the trap
        else:
            assert head_loaded == {owner + n for n in model.head.state_dict()}, head
            assert torch.equal(target.state_dict()[owner + "text_proj.2.weight"], model.head.text_proj[2].weight)


def test_tha_dcr_training_from_a_converted_model_lowers_the_loss(converted, tmp_path):
    ckpt, model = converted
    data = tmp_path / "data"
    generate(data, clips=16, seed=0, sample_rate=8000, duration=1.0, progress=False)
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=2e-3, text_lr=2e-3, clip_seconds=1.0, save_every_steps=1000,
                      init_from=str(ckpt), model=ModelConfig(head="tha+dcr"), seed=0)
    train(data, tmp_path / "run", cfg, progress=False)
    report = json.loads((tmp_path / "run" / "init.json").read_text())
    # DCR's pooled projection is DP's: it starts from the converted model's, its CA layers fresh
    assert report["parts"] == {"audio_encoder": "checkpoint", "text_encoder": "checkpoint",
                               "head.parts.tha": "fresh", "head.parts.dcr": "partly"}
    assert report["renamed"]["head.parts.dcr.audio_proj.0.weight"] == "head.audio_proj.0.weight"
    assert not [n for n in report["unused"] if "_proj" in n]
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    losses = [h["loss"] for h in history if "loss" in h and "epoch_end" not in h]
    assert len(losses) >= 12
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4
    trained = hade.load(tmp_path / "run" / "checkpoints" / "last")
    assert trained.config.text_config == read_model_config(ckpt).text_config and trained.config.head == "tha+dcr"
