"""Training: the loss falls, retrieval beats chance, and an interrupted run resumes exactly."""
import json

import pytest
import torch
from safetensors.torch import load_file

import hade
from hade.config import ModelConfig, TrainConfig
from hade.data.readers import read_split
from hade.data.synthcaps import generate
from hade.eval.evaluate import evaluate
from hade.errors import InputError
from hade.train.trainer import Trainer, train


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthcaps")
    generate(out, clips=60, seed=0, sample_rate=8000, duration=1.0, progress=False)
    return out


def tiny_train_config(tiny_model_config: ModelConfig, **kw) -> TrainConfig:
    base = dict(epochs=8, batch_size=16, lr=2e-3, text_lr=2e-3, clip_seconds=1.0, save_every_steps=1000,
                model=ModelConfig(**tiny_model_config.__dict__))
    base.update(kw)
    return TrainConfig(**base)


def test_short_training_lowers_loss_and_beats_chance(synth_dir, tmp_path, tiny_model_config):
    torch.manual_seed(0)
    cfg = tiny_train_config(tiny_model_config)
    summary = train(synth_dir, tmp_path / "run", cfg, progress=False)
    assert summary.epochs_done == 8
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    losses = [h["loss"] for h in history if "loss" in h]
    first, last = sum(losses[:13]) / 13, sum(losses[-13:]) / 13
    assert last < 0.85 * first
    assert (tmp_path / "run" / "curve.png").stat().st_size > 1000
    model = hade.load(tmp_path / "run" / "checkpoints" / "last")
    metrics = evaluate(model, read_split(synth_dir, "development"), 1.0, progress=False)
    chance = metrics.chance
    assert metrics.t2a["R@1"] > 3 * chance.t2a["R@1"]
    assert metrics.t2a["R@10"] > 2 * chance.t2a["R@10"]
    best = json.loads((tmp_path / "run" / "checkpoints" / "best" / "info.json").read_text())
    assert best["epoch"] == summary.best_epoch


def test_interrupted_run_resumes_to_the_same_weights(synth_dir, tmp_path, tiny_model_config):
    # 10 steps cross the epoch boundary (8 steps per epoch) and a validation pass
    cfg = tiny_train_config(tiny_model_config, epochs=2, save_every_steps=4)
    cfg.model.text_overrides = {**cfg.model.text_overrides, "hidden_dropout_prob": 0.1}  # RNG must be restored
    straight = train(synth_dir, tmp_path / "a", cfg, progress=False, stop_after_steps=10)
    assert straight.stopped_early and straight.global_step == 10
    first = train(synth_dir, tmp_path / "b", cfg, progress=False, stop_after_steps=3)
    assert first.global_step == 3
    saved_seconds = torch.load(tmp_path / "b" / "checkpoints" / "last" / "train_state.pt",
                               weights_only=True)["progress"]["train_seconds"]
    assert 0 < saved_seconds <= first.seconds
    second = train(synth_dir, tmp_path / "b", cfg, progress=False, stop_after_steps=10)
    assert second.global_step == 10
    # the reported training time covers both sessions
    assert second.seconds >= saved_seconds + second.seconds_this_run - 1e-3
    wa = load_file(tmp_path / "a" / "checkpoints" / "last" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "checkpoints" / "last" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6, msg=key)
    ha = json.loads((tmp_path / "a" / "metrics.json").read_text())["history"]
    hb = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    assert [h.get("loss") for h in ha] == pytest.approx([h.get("loss") for h in hb], rel=1e-5)


def test_epoch_loss_after_a_resume_covers_the_whole_epoch(synth_dir, tmp_path, tiny_model_config):
    cfg = tiny_train_config(tiny_model_config, epochs=1, save_every_steps=1000)
    train(synth_dir, tmp_path / "a", cfg, progress=False)
    train(synth_dir, tmp_path / "b", cfg, progress=False, stop_after_steps=3)
    train(synth_dir, tmp_path / "b", cfg, progress=False)  # resumes mid-epoch, at step 3
    ha = json.loads((tmp_path / "a" / "metrics.json").read_text())["history"]
    hb = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    (end_a,), (end_b,) = ([h for h in history if "epoch_end" in h] for history in (ha, hb))
    steps = [h["loss"] for h in ha if "step" in h and "epoch_end" not in h]
    assert len(steps) > 3 and end_a["train_loss"] == pytest.approx(sum(steps) / len(steps), rel=1e-6)
    assert end_b["train_loss"] == pytest.approx(end_a["train_loss"], rel=1e-5)


def test_start_removes_temporaries_of_killed_checkpoint_writes(tmp_path, tiny_model_config):
    from hade.errors import InputError

    checkpoints = tmp_path / "run" / "checkpoints"
    stale = [checkpoints / ".last.k1ll3d00.999999999@this-host.tmp", checkpoints / ".best.k1ll3d00.tmp",
             tmp_path / "run" / ".metrics.json.k1ll3d00.1@another-host.tmp"]
    for path in stale[:2]:
        path.mkdir(parents=True)
        (path / "model.safetensors").write_bytes(b"half a checkpoint")
    stale[2].write_text("{")
    logged = []
    with pytest.raises(InputError):  # no data: the run stops right after its start-up clean-up
        Trainer(tmp_path / "no-data", tmp_path / "run", tiny_train_config(tiny_model_config), progress=False,
                log=logged.append).run()
    assert not any(p.exists() for p in stale)
    assert any("removed 3 temporary file(s)" in line for line in logged)


def test_corrupt_training_state_stops_the_resume_with_a_clear_error(tmp_path, tiny_model_config):
    from hade.errors import InputError

    state = tmp_path / "run" / "checkpoints" / "last" / "train_state.pt"
    state.parent.mkdir(parents=True)
    state.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match=r"train_state.pt: truncated or corrupt training state .*--no-resume"):
        train(tmp_path, tmp_path / "run", tiny_train_config(tiny_model_config), progress=False)


def test_no_training_data_is_a_clear_error(tmp_path, tiny_model_config):
    from hade.errors import InputError

    with pytest.raises(InputError):
        train(tmp_path, tmp_path / "run", tiny_train_config(tiny_model_config), progress=False)


def test_caption_augmentation_is_used_and_reproducible(synth_dir, tmp_path, tiny_model_config, monkeypatch):
    import hade.train.objective as objective_mod

    seen: list[list[str]] = []
    original = objective_mod.training_loss

    def spy(model, batch, *args):
        seen.append(list(batch["caption"]))
        return original(model, batch, *args)

    monkeypatch.setattr(objective_mod, "training_loss", spy)
    cfg = tiny_train_config(tiny_model_config, epochs=1, caption_augment=1.0)
    train(synth_dir, tmp_path / "a", cfg, progress=False, stop_after_steps=2)
    first, seen[:] = list(seen), []
    train(synth_dir, tmp_path / "b", cfg, progress=False, stop_after_steps=2)
    assert seen == first  # same seed, same paraphrases
    plain = tiny_train_config(tiny_model_config, epochs=1)
    seen.clear()
    train(synth_dir, tmp_path / "c", plain, progress=False, stop_after_steps=2)
    assert seen != first  # augmentation changed some captions


def test_hci_with_auxiliary_captions_trains_on_extra_pairs(synth_dir, tmp_path, tiny_model_config, monkeypatch):
    import hade.train.objective as objective_mod

    batches = []
    original = objective_mod.training_loss

    def spy(model, batch, *args):
        batches.append(batch)
        return original(model, batch, *args)

    monkeypatch.setattr(objective_mod, "training_loss", spy)
    cfg = tiny_train_config(tiny_model_config, epochs=1, aux_captions="synthcaps", aux_error_rate=0.3)
    cfg.model.head = "hci+ac"
    summary = train(synth_dir, tmp_path / "run", cfg, progress=False)
    assert summary.epochs_done == 1
    aux = [a for b in batches for a in b["aux"]]
    assert any(a for a in aux)  # clips carried their generated caption to the audio side
    # the extra (clip, generated caption) pairs are in the training set, with the caption hidden from the audio
    pairs = [(cap, a) for b in batches for cap, a in zip(b["caption"], b["aux"])]
    assert any(a is None for _, a in pairs)
    # plain 5 captions x 42 development clips would give 210 pairs; the extra pairs add more steps
    assert summary.global_step > 210 // 16


def test_interrupted_run_with_workers_resumes_to_the_same_weights(synth_dir, tmp_path, tiny_model_config):
    """Worker processes decode the batches: an interrupted, resumed 2-worker run ends bit-equal to an
    uninterrupted run without workers (batches depend on (seed, epoch, pair) only)."""
    cfg = tiny_train_config(tiny_model_config, epochs=1, num_workers=0)  # 13 steps: no validation pass
    cfg.model.text_overrides = {**cfg.model.text_overrides, "hidden_dropout_prob": 0.1}  # RNG must be restored
    train(synth_dir, tmp_path / "a", cfg, progress=False, stop_after_steps=4)
    workers = tiny_train_config(tiny_model_config, epochs=1, num_workers=2, audio_cache_mb=1.0)
    workers.model = cfg.model
    assert train(synth_dir, tmp_path / "b", workers, progress=False, stop_after_steps=2).global_step == 2
    logged: list[str] = []
    workers.num_workers = 1  # a resume may change the workers: it keeps them and says nothing differs
    assert Trainer(synth_dir, tmp_path / "b", workers, progress=False, log=logged.append).run(
        stop_after_steps=4).global_step == 4
    assert not [line for line in logged if "differs" in line]
    wa = load_file(tmp_path / "a" / "checkpoints" / "last" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "checkpoints" / "last" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_training_streams_instead_of_decoding_the_split(synth_dir, tmp_path, tiny_model_config, monkeypatch):
    import hade.data.dataset as dataset_mod

    decoded = []
    original = dataset_mod.load_audio
    monkeypatch.setattr(dataset_mod, "load_audio", lambda path, sr: decoded.append(path) or original(path, sr))
    cfg = tiny_train_config(tiny_model_config, epochs=1, max_steps=2, num_workers=0, audio_cache_mb=0.0)
    train(synth_dir, tmp_path / "run", cfg, progress=False, stop_after_steps=2)
    assert len(decoded) == 2 * cfg.batch_size  # only the clips of the two batches, not the 42 of the split
    with pytest.raises(InputError, match="audio_cache_mb"):
        train(synth_dir, tmp_path / "bad", tiny_train_config(tiny_model_config, audio_cache_mb=-1), progress=False)


def test_clip_failing_to_decode_in_a_worker_is_skipped_and_reported(synth_dir, tmp_path, tiny_model_config):
    import shutil

    import numpy as np
    import soundfile as sf

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    bad = read_split(data, "development").clips[5].audio_path
    wave, sr = sf.read(str(bad), dtype="float32")
    wave[10] = np.nan  # a good header over bad samples: found only when a worker decodes it
    sf.write(str(bad), wave, sr, subtype="FLOAT")
    logged = []
    cfg = tiny_train_config(tiny_model_config, epochs=1, num_workers=2)
    summary = Trainer(data, tmp_path / "run", cfg, progress=False, log=logged.append).run()
    assert summary.epochs_done == 1 and summary.decode_failures == 1
    assert [line for line in logged if "failed to decode" in line and bad.name in line and "non-finite" in line]


def test_validation_every_n_steps_on_a_fixed_subset_resumes_exactly(synth_dir, tmp_path, tiny_model_config):
    """validate_every_steps=3 on 5 validation clips: validations at steps 3 and 6 in an uninterrupted run
    and in one killed at step 4 and resumed, with the same weights, records and best checkpoint."""
    cfg = tiny_train_config(tiny_model_config, epochs=1, save_every_steps=1000, validate_every_steps=3,
                            validate_clips=5)
    cfg.model.text_overrides = {**cfg.model.text_overrides, "hidden_dropout_prob": 0.1}  # RNG must be restored
    straight = train(synth_dir, tmp_path / "a", cfg, progress=False, stop_after_steps=7)
    train(synth_dir, tmp_path / "b", cfg, progress=False, stop_after_steps=4)
    resumed = train(synth_dir, tmp_path / "b", cfg, progress=False, stop_after_steps=7)
    assert resumed.global_step == straight.global_step == 7
    assert resumed.best_step == straight.best_step in (3, 6)
    wa = load_file(tmp_path / "a" / "checkpoints" / "last" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "checkpoints" / "last" / "model.safetensors")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6, msg=key)
    ha = json.loads((tmp_path / "a" / "metrics.json").read_text())["history"]
    hb = json.loads((tmp_path / "b" / "metrics.json").read_text())["history"]
    checks = [[h for h in history if "val" in h] for history in (ha, hb)]
    assert [h["step"] for h in checks[0]] == [h["step"] for h in checks[1]] == [3, 6]
    assert [h["score"] for h in checks[0]] == pytest.approx([h["score"] for h in checks[1]], rel=1e-5)
    assert all(h["val"]["chance"]["t2a"]["R@1"] == pytest.approx(100 / 5) for h in checks[0])  # 5 clips
    best = [json.loads((tmp_path / run / "checkpoints" / "best" / "info.json").read_text()) for run in "ab"]
    assert best[0]["step"] == best[1]["step"] == straight.best_step


def test_validation_subset_is_evenly_spaced_by_sorted_id_and_fixed():
    from pathlib import Path

    from hade.data.types import Clip, SplitData
    from hade.train.validation import validation_subset

    clips = [Clip(f"c{i:02d}", Path(f"{i}.wav"), ("x",)) for i in (7, 3, 9, 0, 5, 1, 8, 2, 6, 4)]
    split = SplitData("validation", clips)
    subset = validation_subset(split, 4)
    assert [c.clip_id for c in subset.clips] == ["c00", "c03", "c06", "c09"]
    assert validation_subset(split, 4) == subset
    assert [c.clip_id for c in validation_subset(split, 1).clips] == ["c00"]
    assert validation_subset(split, None) is split and validation_subset(split, 10) is split


@pytest.mark.parametrize("field,value", [("validate_every_steps", 0), ("validate_clips", -2),
                                         ("validate_every_steps", 2.5), ("validate_clips", True)])
def test_bad_validation_settings_are_named(tmp_path, tiny_model_config, field, value):
    with pytest.raises(InputError, match=f"{field}: expected an integer >= 1"):
        train(tmp_path, tmp_path / "run", tiny_train_config(tiny_model_config, **{field: value}), progress=False)


def test_clips_longer_than_the_encoder_train_in_segments(synth_dir, tmp_path, tiny_model_config, monkeypatch):
    """clip_seconds beyond the encoder's 2.05 s: batches are encoded in segments, with each clip's audio
    length (1 s here: only its first segment holds audio), and the model keeps that clip length."""
    import hade.models.segments as segments

    calls = []
    real = segments.encode_segments

    def spy(encoder, wave, segment, lengths=None):
        calls.append((wave.shape, lengths))
        return real(encoder, wave, segment, lengths)

    monkeypatch.setattr(segments, "encode_segments", spy)
    cfg = tiny_train_config(tiny_model_config, epochs=1, clip_seconds=2.5)
    logs: list[str] = []
    Trainer(synth_dir, tmp_path / "run", cfg, progress=False, log=logs.append).run()
    assert "clips of 2.5 s are encoded as 2 segments of the audio encoder's 2.04787 s input (2x" in logs[0]
    assert calls and all(shape[1] == 20000 for shape, _ in calls)
    assert all(lengths is not None and set(lengths.tolist()) == {8000} for _, lengths in calls)
    assert hade.load(tmp_path / "run" / "checkpoints" / "last").clip_seconds == 2.5
