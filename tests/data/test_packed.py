"""Packed sets (`hade pack`): read like their source folder, same waveforms within int16's step, same
batches; resumable; bad files reported and skipped; streamed clip by clip."""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import hade.data.audio as audio_mod
from hade.apps import pack as pack_app
from hade.data.audio import audio_info, load_audio
from hade.data.dataset import ClipAudioStore, TrainPairs
from hade.data.loader import StepBatchSampler, train_loader
from hade.data.packed import packed_ref
from hade.data.packed.shards import FULL_SCALE, INT16_MAX, clear_cache
from hade.data.packed.writer import pack
from hade.data.readers import detect_layout, read_split
from hade.errors import AudioError, InputError

RATE = 16000


def make_set(root: Path, clips: int = 9, nan_clip: int | None = None, corrupt: bool = False) -> Path:
    """A manifest set of 22.05 kHz clips of different lengths (one above full scale), 1-3 captions each;
    optionally a clip whose body holds a NaN (good header) and a file that is not audio at all."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(clips):
        wave = (0.3 * rng.standard_normal(3000 + 700 * (i % 4))).astype(np.float32)
        if i == 1:
            wave[100:400] = 1.5  # above 1.0 after resampling: stored with a scale, not clipped
        if i == nan_clip:
            wave[5] = np.nan
        sf.write(str(root / f"c{i}.wav"), wave, 22050, subtype="FLOAT")
        lines.append({"id": f"c{i}", "audio": f"c{i}.wav", "captions": [f"clip {i} caption {j}" for j in range(1 + i % 3)]})
    if corrupt:
        (root / "bad.wav").write_bytes(b"not audio at all")
        lines.insert(3, {"id": "bad", "audio": "bad.wav", "captions": ["never packed"]})
    (root / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (root / "test.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines[:4]))
    return root


def tolerance(wave: np.ndarray | torch.Tensor) -> float:
    """Half an int16 step: 1/65536, or of the scaled step when the clip peaks above full scale."""
    return max(1.0, float(np.abs(np.asarray(wave)).max()) * FULL_SCALE / INT16_MAX) / (2 * FULL_SCALE) + 1e-7


@pytest.fixture()
def packed(tmp_path):
    src = make_set(tmp_path / "raw")
    return src, pack(src, tmp_path / "packed", RATE, clips_per_shard=4, progress=False).out


def test_packed_split_reads_like_its_source(packed):
    src, out = packed
    assert detect_layout(out) == "packed"
    for split, alias in (("train", "development"), ("test", "evaluation")):
        raw, got = read_split(src, split), read_split(out, alias)
        assert got.name == alias and got.problems == []
        assert [(c.clip_id, c.captions) for c in got.clips] == [(c.clip_id, c.captions) for c in raw.clips]
        assert [c.audio_path.name for c in got.clips] == [c.audio_path.name for c in raw.clips]
        for a, b in zip(raw.clips, got.clips):
            wa, wb = load_audio(a.audio_path, RATE), load_audio(b.audio_path, RATE)
            assert wb.dtype == np.float32 and wa.shape == wb.shape
            assert np.abs(wa - wb).max() <= tolerance(wa)
            info = audio_info(b.audio_path)
            assert (info.sample_rate, info.channels, info.frames) == (RATE, 1, wa.shape[0])
    over = load_audio(read_split(out, "train").clips[1].audio_path, RATE)
    assert np.abs(over).max() > 1.0  # the overshooting clip kept its peak


def test_packed_set_gives_the_same_batches(packed):
    src, out = packed
    batches = []
    for root, workers in ((src, 0), (out, 0), (out, 2)):
        pairs = TrainPairs(ClipAudioStore(read_split(root, "train"), RATE, cache=False), clip_samples=4000, seed=5)
        sampler = StepBatchSampler(pairs.pair_clip_index, batch_size=4, seed=5)
        batches.append(list(train_loader(pairs, sampler, workers, seed=5)))
    raw, packed_0, packed_2 = batches
    assert len(raw) == len(packed_0) == len(packed_2) > 0
    for a, b, c in zip(raw, packed_0, packed_2):
        assert torch.equal(a["index"], b["index"]) and a["caption"] == b["caption"]
        assert (a["audio"] - b["audio"]).abs().max() <= tolerance(a["audio"])
        assert torch.equal(b["audio"], c["audio"])  # and bit for bit whatever the workers


def make_pcm16_set(src: Path, rate: int) -> Path:
    """Six 16-bit PCM clips at ``rate``, two captions each (as Clotho's and AudioCaps' WAV files are stored)."""
    rng = np.random.default_rng(1)
    src.mkdir()
    lines = []
    for i in range(6):
        pcm = rng.integers(-32768, 32768, 2000 + 300 * i).astype(np.int16)
        pcm[:50] = [-32768, 32767] * 25  # both ends of the range
        sf.write(str(src / f"p{i}.wav"), pcm, rate, subtype="PCM_16")
        lines.append(json.dumps({"id": f"p{i}", "audio": f"p{i}.wav", "captions": [f"pcm clip {i}", f"again {i}"]}))
    (src / "train.jsonl").write_text("\n".join(lines) + "\n")
    return src


def test_pcm16_source_at_the_packed_rate_comes_back_bit_for_bit(tmp_path):
    src = make_pcm16_set(tmp_path / "raw", RATE)
    out = pack(src, tmp_path / "packed", RATE, progress=False).out
    batches = []
    for root in (src, out):
        split = read_split(root, "train")
        pairs = TrainPairs(ClipAudioStore(split, RATE, cache=False), clip_samples=2500, seed=1)
        batches.append(list(train_loader(pairs, StepBatchSampler(pairs.pair_clip_index, 4, seed=1), 0, seed=1)))
        waves = [load_audio(c.audio_path, RATE) for c in split.clips]
        if root == src:
            raw_waves = waves
    assert all(np.array_equal(a, b) for a, b in zip(raw_waves, waves))
    assert len(batches[0]) == len(batches[1]) > 0
    assert all(torch.equal(a["audio"], b["audio"]) and a["caption"] == b["caption"] for a, b in zip(*batches))


def test_bad_files_are_reported_and_skipped(tmp_path):
    src = make_set(tmp_path / "raw", nan_clip=6, corrupt=True)
    result = pack(src, tmp_path / "packed", RATE, clips_per_shard=4, progress=False)
    train = next(s for s in result.splits if s.name == "train")
    assert train.clips == 9 - 1
    report = json.loads((result.out / "pack-report.json").read_text())["splits"]["train"]
    sources = sorted(Path(r["source"]).name for r in report)
    assert sources == ["bad.wav", "c6.wav"]
    assert any("non-finite" in r["reason"] for r in report)
    got = read_split(result.out, "train")
    assert [c.clip_id for c in got.clips] == [f"c{i}" for i in range(9) if i != 6]
    assert sorted(Path(p.source).name for p in got.problems) == sources


def test_interrupted_pack_resumes_and_keeps_finished_shards(tmp_path, monkeypatch):
    src = make_set(tmp_path / "raw")
    reference = pack(src, tmp_path / "whole", RATE, clips_per_shard=4, progress=False).out
    calls = {"n": 0}
    real = audio_mod.load_audio

    def dying(path, rate):
        calls["n"] += 1
        if calls["n"] == 4 + 4 + 2:  # splits in name order: test (4 clips), then train's 1st shard, then in its 2nd
            raise KeyboardInterrupt
        return real(path, rate)

    monkeypatch.setattr(audio_mod, "load_audio", dying)
    out = tmp_path / "packed"
    with pytest.raises(KeyboardInterrupt):
        pack(src, out, RATE, clips_per_shard=4, progress=False)
    assert not (out / "hade-packed.json").exists()  # not readable as a set until finished
    assert not list(out.rglob("*.tmp"))  # the half-written shard left no temporary behind
    first = (out / "train" / "shard-00000.pcm16").stat().st_mtime_ns
    calls["n"] = -1000
    pack(src, out, RATE, clips_per_shard=4, progress=False)
    assert calls["n"] == -1000 + 9 - 4  # only the unfinished shards were decoded again
    assert (out / "train" / "shard-00000.pcm16").stat().st_mtime_ns == first
    for split in ("train", "test"):
        for f in sorted((reference / split).iterdir()):
            assert (out / split / f.name).read_bytes() == f.read_bytes(), f.name


def test_a_rerun_packs_a_truncated_shard_again_and_says_so(tmp_path, capsys):
    """Issue 24: a re-run over a truncated shard reported "0 skipped" and left it truncated, and training
    then validated on fewer clips without a word."""
    src = make_set(tmp_path / "raw")
    out = pack(src, tmp_path / "packed", RATE, clips_per_shard=4, progress=False).out
    shard = out / "train" / "shard-00000.pcm16"
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 3])
    result = pack(src, out, RATE, clips_per_shard=4, progress=False)
    (train,) = [s for s in result.splits if s.name == "train"]
    assert len(train.repacked) == 1 and "truncated" in train.repacked[0] and shard.read_bytes() == whole
    assert "1 damaged shard(s) packed again" in pack_app.format_result(result)
    assert "packing it again" in capsys.readouterr().err


def test_pack_refuses_other_arguments_and_foreign_folders(tmp_path):
    src = make_set(tmp_path / "raw")
    out = pack(src, tmp_path / "packed", RATE, clips_per_shard=4, progress=False).out
    with pytest.raises(InputError, match="sample_rate: 16000 there, 32000 now"):
        pack(src, out, 32000, clips_per_shard=4, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(InputError, match="not a packed set"):
        pack(src, tmp_path / "other", RATE, progress=False)
    with pytest.raises(InputError, match="sample-rate"):
        pack(src, tmp_path / "new", 0, progress=False)


def test_pack_streams_clip_by_clip(tmp_path, monkeypatch):
    """Bounded memory: each clip is in the shard file before the next one is decoded."""
    src = make_set(tmp_path / "raw")
    (src / "test.jsonl").unlink()
    out = tmp_path / "packed"
    real = audio_mod.load_audio
    seen: list[tuple[int, int]] = []

    def watching(path, rate):
        temps = list((out / "train").glob(".shard-*.pcm16.*.tmp")) if (out / "train").is_dir() else []
        if temps:  # bytes already written to the open shard vs the clips decoded for it so far
            seen.append((temps[0].stat().st_size, sum(2 * real(p, rate).shape[0] for p in decoded)))
        wave = real(path, rate)
        decoded.append(path)
        return wave

    decoded: list[Path] = []
    monkeypatch.setattr(audio_mod, "load_audio", watching)
    pack(src, out, RATE, clips_per_shard=9, progress=False)
    assert len(seen) == 9
    assert all(0 <= expected - size <= io.DEFAULT_BUFFER_SIZE for size, expected in seen), seen


def test_damaged_shard_is_an_audio_error_naming_it(packed):
    _, out = packed
    clip = read_split(out, "train").clips[5]
    shard = packed_ref(clip.audio_path).shard
    shard.write_bytes(shard.read_bytes()[:100])
    clear_cache()
    with pytest.raises(AudioError, match=r"shard-00001\.pcm16.*truncated"):
        load_audio(clip.audio_path, RATE)
    clear_cache()


def test_packed_ref_ignores_ordinary_paths(tmp_path):
    assert packed_ref(tmp_path / "a.wav") is None
    assert packed_ref(tmp_path / "x.pcm16" / "notarow" / "a.wav") is None
    ref = packed_ref(tmp_path / "shard-00002.pcm16" / "7" / "a.wav")
    assert ref is not None and ref.row == 7 and ref.shard == tmp_path / "shard-00002.pcm16"


def test_pack_command(tmp_path, capsys):
    src = make_set(tmp_path / "raw", corrupt=True)
    parser = argparse.ArgumentParser()
    pack_app.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pack", str(src), "--out", str(tmp_path / "p"), "--sample-rate", "8000", "--quiet"])
    assert pack_app.run(args) == 0
    out = capsys.readouterr().out
    assert "at 8000 Hz" in out and "train (from train): 9 clips in 1 shard(s), 1 skipped" in out
    assert "pack-report.json" in out
    assert audio_info(read_split(tmp_path / "p", "train").clips[0].audio_path).sample_rate == 8000


def test_packed_set_evaluates_like_its_source(tmp_path, tiny_model_config):
    from hade.eval.evaluate import evaluate
    from hade.models.factory import create_model

    torch.manual_seed(0)
    model = create_model(tiny_model_config).eval()
    src = make_pcm16_set(tmp_path / "raw", model.sample_rate)
    out = pack(src, tmp_path / "packed", model.sample_rate, progress=False).out
    raw, got = (evaluate(model, read_split(root, "train"), 0.3, progress=False) for root in (src, out))
    assert got == raw and got.t2a["R@1"] >= 0
