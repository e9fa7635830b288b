"""Audio-tagging pretraining (`hade pretrain`) and starting every head from it (`--init-from RUN`)."""
import json

import numpy as np
import pytest
import torch

import hade
from hade.config import ModelConfig, PretrainConfig
from hade.data.readers import read_split
from hade.data.synthcaps import generate
from hade.data.tags import read_clip_tags, synthcaps_labels
from hade.errors import InputError
from hade.models.heads import HEADS
from hade.train.init import initialise_from
from hade.train.pretrain import ENCODER_FILE, PretrainSummary, average_precision, pretrain

CFG = dict(audio_encoder="htsat-test", epochs=3, batch_size=8, lr=2e-3, clip_seconds=1.0, seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tags") / "synth"
    generate(root, clips=40, seed=4, sample_rate=8000, duration=1.0, progress=False)
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "run"
    info = pretrain(data, out, PretrainConfig(**CFG), progress=False, log=lambda _: None)
    return out, info


def test_tags_are_the_events_each_clip_holds(data):
    split = read_split(data, "train")
    tags = read_clip_tags(data, split, "train")
    meta = json.loads((data / "synthcaps_metadata_development.json").read_text())
    assert tags.labels == synthcaps_labels(data) and tags.targets.shape == (len(split.clips), len(tags.labels))
    for row, clip in enumerate(split.clips[:5]):
        want = {e["type"] for e in meta[clip.clip_id]["events"]}
        assert {tags.labels[i] for i in np.flatnonzero(tags.targets[row])} == want


def test_missing_metadata_is_named(data, tmp_path):
    (tmp_path / "synthcaps.json").write_text(json.dumps({"event_types": ["dog_bark"]}))
    with pytest.raises(InputError, match="synthcaps_metadata_train.json: missing"):
        read_clip_tags(tmp_path, read_split(data, "train"), "train")


def test_average_precision_by_hand():
    scores = np.array([[0.9], [0.8], [0.7], [0.1]])
    targets = np.array([[1.0], [0.0], [1.0], [0.0]])
    assert average_precision(scores, targets) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_pretraining_learns_the_tags_and_keeps_the_best_encoder(run):
    out, info = run
    losses = [h.loss for h in info.history]
    assert losses[-1] < losses[0]
    assert info.best.val_mAP > 2 * info.chance_val_mAP  # far above what random scores give
    assert info.best.val_mAP == max(h.val_mAP for h in info.history)
    assert (out / ENCODER_FILE).is_file() and info.epochs_done == 3 and info.finished
    assert PretrainSummary.read(out) == info  # pretrain.json holds all of it
    assert json.loads((out / "pretrain.json").read_text())["best"] == {"epoch": info.best.epoch,
                                                                      "val_mAP": info.best.val_mAP}


def test_an_interrupted_run_resumes_to_the_same_result(data, run, tmp_path):
    _, full = run
    pretrain(data, tmp_path / "run", PretrainConfig(**CFG), progress=False, stop_after_epochs=1, log=lambda _: None)
    resumed = pretrain(data, tmp_path / "run", PretrainConfig(**CFG), progress=False, log=lambda _: None)
    assert [h.loss for h in resumed.history] == pytest.approx([h.loss for h in full.history], rel=1e-5)
    with pytest.raises(InputError, match="another config"):
        pretrain(data, tmp_path / "run", PretrainConfig(**{**CFG, "lr": 1e-4}), progress=False, log=lambda _: None)


def test_clips_longer_than_the_encoder_are_tagged_in_segments(data, tmp_path):
    """htsat-test takes 16,383 samples (2.05 s at 8 kHz): 5 s clips are 3 segments, logged and recorded.
    (Training in segments is not equal to training on the first one: the encoder's BatchNorm sees the
    padded segments; which segments count is tested on the tagger below.)"""
    logs: list[str] = []
    info = pretrain(data, tmp_path / "long", PretrainConfig(**{**CFG, "epochs": 1, "clip_seconds": 5.0}),
                    progress=False, log=logs.append)
    assert info.segments == 3 and any("encoded in 3 segments" in line for line in logs)
    assert np.isfinite(info.history[0].loss) and (tmp_path / "long" / ENCODER_FILE).is_file()


def test_the_tagger_averages_only_the_segments_holding_audio():
    from hade.models.encoders.audio import build_audio_encoder
    from hade.models.factory import audio_config
    from hade.models.tagger import AudioTagger

    torch.manual_seed(0)
    tagger = AudioTagger(build_audio_encoder(audio_config(ModelConfig(audio_encoder="htsat-test"))), 5).eval()
    seg = tagger.audio_encoder.max_samples
    wave = torch.zeros(2, 2 * seg)
    wave[:, :seg] = 0.1 * torch.randn(2, seg)
    wave[1, seg:] = 0.1 * torch.randn(seg)
    with torch.no_grad():
        got = tagger(wave, torch.tensor([seg, 2 * seg]))
        first = tagger(wave[:, :seg])
        both = tagger.classifier((tagger.audio_encoder(wave[:, :seg]).pooled
                                  + tagger.audio_encoder(wave[:, seg:]).pooled) / 2)
    torch.testing.assert_close(got[0], first[0], atol=1e-5, rtol=0)  # its second segment is padding only
    torch.testing.assert_close(got[1], both[1], atol=1e-5, rtol=0)
    assert not torch.allclose(got[1], first[1], atol=1e-3)


@pytest.mark.parametrize("bad, field", [({"lr": "fast"}, "lr"), ({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr")])
def test_bad_config_values_name_their_field(data, tmp_path, bad, field):
    with pytest.raises(InputError, match=field):
        pretrain(data, tmp_path / "r", PretrainConfig(**{**CFG, **bad}), progress=False)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_starts_from_the_pretrained_encoder(run, tiny_model_config, head):
    out, _ = run
    torch.manual_seed(1)
    model = hade.create_model(ModelConfig(**{**tiny_model_config.__dict__, "head": head}))
    report = initialise_from(model, out)
    from safetensors.torch import load_file

    saved = load_file(str(out / ENCODER_FILE))
    assert all(torch.equal(v, saved[k]) for k, v in model.audio_encoder.state_dict().items())
    assert report.kind == "hade-pretrain" and report.parts["audio_encoder"] == "checkpoint"
    assert all(where == "fresh" for part, where in report.parts.items() if part != "audio_encoder")
    assert report.parts["text_encoder"] == "fresh"


def test_a_differently_built_encoder_is_refused(run, tiny_model_config):
    out, _ = run
    model = hade.create_model(ModelConfig(**{**tiny_model_config.__dict__, "audio_overrides": {"fmax": 3000.0}}))
    with pytest.raises(InputError, match="fmax"):
        initialise_from(model, out)


def test_hade_train_init_from_a_pretraining_run_writes_init_json(run, data, tiny_model_config, tmp_path):
    from hade.config import TrainConfig
    from hade.train.trainer import train

    out, _ = run
    cfg = TrainConfig(epochs=1, batch_size=8, clip_seconds=1.0, init_from=str(out), seed=0,
                      model=ModelConfig(**{**tiny_model_config.__dict__, "head": "tha+dcr"}))
    train(data, tmp_path / "ft", cfg, progress=False, stop_after_steps=1)
    init = json.loads((tmp_path / "ft" / "init.json").read_text())
    assert init["kind"] == "hade-pretrain" and init["parts"]["audio_encoder"] == "checkpoint"
    assert init["parts"]["head.parts.tha"] == "fresh" and init["source"] == str(out)
    best = run[1].best
    assert init["task"] == "tagging" and init["pretrain_best"] == {"epoch": best.epoch, "loss": best.loss,
                                                                   "val_mAP": best.val_mAP}


def test_a_damaged_or_older_pretraining_record(run, tiny_model_config, tmp_path):
    """pretrain.json is read in one place: a damaged one is named; one written before `segments` reads as 1."""
    import shutil

    out, info = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("state.pt"))
    raw = json.loads((copy / "pretrain.json").read_text())
    del raw["segments"]
    (copy / "pretrain.json").write_text(json.dumps(raw))
    assert PretrainSummary.read(copy).segments == 1 and PretrainSummary.read(copy).history == info.history
    (copy / "pretrain.json").write_text(json.dumps({**raw, "history": [{"epoch": 1}]}))
    model = hade.create_model(tiny_model_config)
    with pytest.raises(InputError, match=r"init_from .*pretrain\.json: not a readable pretraining record"):
        initialise_from(model, copy)
