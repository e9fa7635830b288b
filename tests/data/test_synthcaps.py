"""SynthCaps: event synthesis, captions, hard negatives, layouts, determinism and resume."""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hade.data.synthcaps import (EVENT_TYPES, EventInstance, Scene, caption_for_events, event_length, generate,
                                 make_group, render_event, render_scene, scene_captions)
from hade.data.synthcaps.events import ATTRIBUTE_VALUES, BASE_PEAK
from hade.data.synthcaps.writer import write_wav_atomic
from hade.errors import InputError

SR = 16000
SMALL = dict(clips=12, sample_rate=8000, duration=1.0, progress=False)


def _render(name: str, attrs: dict | None = None, dur: float = 1.0, seed: int = 0) -> np.ndarray:
    return render_event(name, attrs or {}, dur, SR, np.random.default_rng(seed))


def _centroid(x: np.ndarray) -> float:
    mag = np.abs(np.fft.rfft(x))
    return float((mag * np.fft.rfftfreq(len(x), 1 / SR)).sum() / mag.sum())


def _spectro_temporal(x: np.ndarray) -> np.ndarray:
    """Relative log energy in 12 log-spaced bands for each third of the sound, plus envelope modulation."""
    edges = np.geomspace(50, SR / 2, 13)
    feats = []
    for seg in np.array_split(x, 3):
        power = np.abs(np.fft.rfft(seg)) ** 2
        f = np.fft.rfftfreq(len(seg), 1 / SR)
        e = np.array([power[(f >= a) & (f < b)].sum() for a, b in zip(edges[:-1], edges[1:])]) + 1e-12
        feats.append(np.clip(10 * np.log10(e / e.sum()), -40, 0))
    env = np.sqrt(np.mean(x[: len(x) // 160 * 160].reshape(-1, 160) ** 2, axis=1))  # 10 ms frames
    mod = np.abs(np.fft.rfft(env - env.mean())) ** 2 + 1e-12
    feats.append(np.clip(10 * np.log10(mod[1:21] / mod[1:21].sum()), -40, 0))  # 1-20 Hz modulation
    return np.concatenate(feats)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clotho(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("clotho")
    return out, generate(out, seed=7, **SMALL)


# ---------------------------------------------------------------------------------------------- events
def test_at_least_twenty_event_types_with_vocabulary():
    assert len(EVENT_TYPES) >= 20
    for name, spec in EVENT_TYPES.items():
        assert spec.name == name and spec.label
        assert len(spec.clauses) >= 2 and len(spec.nouns) + len(spec.mass_nouns) >= 2, name
        assert len(set(spec.synonyms)) >= 4, name
        assert "loudness" in spec.attributes and set(spec.attributes) <= set(ATTRIBUTE_VALUES), name


def test_event_types_have_pairwise_distinct_spectro_temporal_signatures():
    feats = {name: _spectro_temporal(_render(name)) for name in EVENT_TYPES}
    dists = {(a, b): float(np.sqrt(np.mean((feats[a] - feats[b]) ** 2))) for a, b in itertools.combinations(feats, 2)}
    closest = min(dists, key=dists.get)
    assert dists[closest] > 2.0, f"{closest} sound alike (rms band difference {dists[closest]:.2f} dB)"
    centroids = [_centroid(_render(n)) for n in EVENT_TYPES]
    assert max(centroids) > 4 * min(centroids)  # spans low rumbles to high hiss


@pytest.mark.parametrize("name", [n for n, s in EVENT_TYPES.items() if "pitch" in s.attributes])
def test_pitch_attribute_moves_the_spectral_centroid(name):
    low, mid, high = (_centroid(_render(name, {"pitch": p} if p else {})) for p in ("low", None, "high"))
    assert low < mid < high, (low, mid, high)
    assert high > 1.4 * low


def test_loudness_is_plus_minus_twelve_db_and_duration_scales_length():
    for name in EVENT_TYPES:
        base = _render(name, {}, 0.5)
        loud, quiet = _render(name, {"loudness": "loud"}, 0.5), _render(name, {"loudness": "quiet"}, 0.5)
        assert np.abs(base).max() == pytest.approx(BASE_PEAK)
        ratio_db = 20 * np.log10(np.sqrt(np.mean(loud ** 2)) / np.sqrt(np.mean(base ** 2)))
        assert ratio_db == pytest.approx(12.0, abs=0.01), name
        assert np.sqrt(np.mean(quiet ** 2)) < np.sqrt(np.mean(base ** 2)) / 3.9
    for name, spec in EVENT_TYPES.items():
        if "duration" in spec.attributes:
            short, long_ = event_length(name, {"duration": "short"}), event_length(name, {"duration": "long"})
            assert short < event_length(name) < long_


def _count_bursts(x: np.ndarray) -> int:
    env = np.sqrt(np.mean(x[: len(x) // 80 * 80].reshape(-1, 80) ** 2, axis=1))  # 5 ms frames
    on = env > 0.2 * env.max()
    return int(np.sum(on[1:] & ~on[:-1]) + on[0])


@pytest.mark.parametrize("name", ["ticking", "alarm", "footsteps", "bird"])
def test_repetition_attribute_changes_the_rate(name):
    slow, normal, fast = (_count_bursts(_render(name, {"repetition": r} if r else {}, 2.0))
                          for r in ("slow", None, "fast"))
    assert slow < normal < fast, (slow, normal, fast)


# ---------------------------------------------------------------------------------------------- captions
def _scene(*steps: list[EventInstance], background: EventInstance | None = None) -> Scene:
    for i, step in enumerate(steps):
        for j, e in enumerate(step):
            e.step, e.role = i, ("sequence" if j == 0 else "concurrent")
    return Scene(list(steps), background)


def test_captions_keep_order_counts_and_overlap():
    rng = np.random.default_rng(0)
    seq = _scene([EventInstance("dog_bark", count=2)], [EventInstance("bell")])
    for _ in range(60):
        c = scene_captions(seq, rng, 5)
        assert len(set(c)) == 5
        for cap in c:
            low = cap.lower()
            assert "twice" in low or "two " in low, cap
            dog = min(low.find(w) for w in ("dog", "bark") if w in low)
            bell = low.find("bell")
            reversed_order = re.search(r" after (?!which)", low) is not None
            assert (bell < dog) if reversed_order else (dog < bell), cap
    both = _scene([EventInstance("whistle"), EventInstance("rain", role="concurrent")],
                  background=EventInstance("engine", role="background", step=None))
    for cap in scene_captions(both, rng, 5):
        low = cap.lower()
        assert re.search(r" while | as |at the same time|together with", low), cap
        assert "background" in low or "throughout" in low, cap


def test_focus_attributes_are_always_mentioned():
    rng = np.random.default_rng(1)
    ev = EventInstance("whistle", attributes={"pitch": "high"}, focus=("pitch",))
    for cap in scene_captions(_scene([ev]), rng, 5):
        assert "high" in cap.lower(), cap


def test_caption_for_events_from_metadata_records():
    events = [{"type": "wind", "start": 0.0, "end": 4.0, "attributes": {}, "count": 1},
              {"type": "dog_bark", "start": 0.5, "end": 1.0, "attributes": {"loudness": "loud"}, "count": 1},
              {"type": "bell", "start": 2.0, "end": 3.0, "attributes": {}, "count": 3}]
    cap = caption_for_events(events, np.random.default_rng(0))
    assert isinstance(cap, str) and cap.endswith(".") and cap[0].isupper()
    assert "bell" in cap.lower() and "three" in cap.lower()


def test_groups_share_bag_of_events_but_differ_in_order_attribute_or_count():
    rng = np.random.default_rng(0)
    kinds = Counter()
    for _ in range(150):
        members = make_group(rng, sorted(EVENT_TYPES), 3)
        assert len({m.bag() for m in members}) == 1
        assert len({m.signature() for m in members}) == 3
        base = members[0]
        for v in members[1:]:
            if [sorted(e.type for e in s) for s in v.steps] != [sorted(e.type for e in s) for s in base.steps]:
                kinds["order"] += 1
            elif any(a.count != b.count for a, b in zip(base.events(), v.events())):
                kinds["count"] += 1
            else:
                kinds["attribute"] += 1
    assert min(kinds[k] for k in ("order", "count", "attribute")) >= 10, kinds


def test_mix_never_clips():
    loud = {"loudness": "loud"}
    scene = _scene([EventInstance("hiss", dict(loud)), EventInstance("alarm", dict(loud), role="concurrent")],
                   background=EventInstance("engine", dict(loud), role="background", step=None))
    for e in scene.events():
        e.onsets, e.occurrence = [0.0], 1.0
    audio = render_scene(scene, 8000, 1.0, np.random.default_rng(0))
    assert audio.dtype == np.float32 and len(audio) == 8000
    assert 0.5 < np.abs(audio).max() <= 0.9 + 1e-6


# ---------------------------------------------------------------------------------------------- layouts
def test_clotho_layout(clotho):
    out, summary = clotho
    total = 0
    for split in ("development", "validation", "evaluation"):
        with open(out / f"clotho_captions_{split}.csv", newline="") as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["file_name", "caption_1", "caption_2", "caption_3", "caption_4", "caption_5"]
        meta = json.loads((out / f"synthcaps_metadata_{split}.json").read_text())
        assert [r[0] for r in rows[1:]] == list(meta)
        for row in rows[1:]:
            assert len(row) == 6 and len(set(row[1:])) == 5 and all(c.strip() for c in row[1:])
            info = sf.info(str(out / split / row[0]))
            assert (info.samplerate, info.frames, info.channels, info.subtype) == (8000, 8000, 1, "PCM_16")
            assert meta[row[0]]["captions"] == row[1:]
            for e in meta[row[0]]["events"]:
                assert e["type"] in EVENT_TYPES and 0 <= e["start"] < e["end"] <= 1.0 and e["count"] >= 1
        total += len(rows) - 1
        assert summary.splits[split].clips == len(rows) - 1 >= 1
    assert total == 12
    opts = json.loads((out / "synthcaps.json").read_text())
    assert (opts["seed"], opts["sample_rate"], opts["duration"], opts["layout"]) == (7, 8000, 1.0, "clotho")
    assert "version" in opts


def test_hard_negatives_exist_within_a_split(clotho):
    out, _ = clotho
    meta = json.loads((out / "synthcaps_metadata_development.json").read_text())
    by_bag: dict[tuple, list] = {}
    for item in meta.values():
        by_bag.setdefault(tuple(sorted(e["type"] for e in item["events"])), []).append(item)
    pairs = [(a, b) for items in by_bag.values() for a, b in itertools.combinations(items, 2)
             if a["captions"] != b["captions"] and a["group"] == b["group"]]
    assert pairs, "no two clips share a bag of events"


def test_audiocaps_layout(tmp_path):
    generate(tmp_path, layout="audiocaps", **SMALL)
    ids = []
    for split in ("train", "val", "test"):
        with open(tmp_path / f"{split}.csv", newline="") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames == ["audiocap_id", "youtube_id", "start_time", "caption"]
            rows = list(reader)
        per_clip = Counter(r["youtube_id"] for r in rows)
        assert set(per_clip.values()) == ({1} if split == "train" else {5})
        for r in rows:
            assert re.fullmatch(r"[A-Za-z0-9_-]{11}", r["youtube_id"]) and r["start_time"] == "0" and r["caption"]
            assert (tmp_path / split / f"{r['youtube_id']}.wav").is_file()
            ids.append(int(r["audiocap_id"]))
        meta = json.loads((tmp_path / f"synthcaps_metadata_{split}.json").read_text())
        assert set(meta) == set(per_clip)
    assert len(ids) == len(set(ids))


def test_wavcaps_layout(tmp_path):
    generate(tmp_path, layout="wavcaps", **SMALL)
    n = 0
    for split in ("train", "val", "test"):
        doc = json.loads((tmp_path / f"{split}.json").read_text())
        assert doc["num_captions_per_audio"] == 5
        for item in doc["data"]:
            assert set(item) == {"id", "audio", "duration"} | {f"caption_{i}" for i in range(1, 6)}
            assert item["audio"] == f"{split}/{item['id']}.wav" and (tmp_path / item["audio"]).is_file()
            assert item["duration"] == 1.0
            n += 1
        assert set(json.loads((tmp_path / f"synthcaps_metadata_{split}.json").read_text())) == \
            {i["id"] for i in doc["data"]}
    assert n == 12


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_identical_bytes_other_seed_different(tmp_path, clotho):
    out, _ = clotho
    again = tmp_path / "again"
    generate(again, seed=7, **SMALL)
    assert _tree(again) == _tree(out)
    other = tmp_path / "other"
    generate(other, seed=8, **SMALL)
    a, b = _tree(out), _tree(other)
    assert a.keys() == b.keys()
    assert a["development/synthcaps_00000.wav"] != b["development/synthcaps_00000.wav"]
    assert a["clotho_captions_development.csv"] != b["clotho_captions_development.csv"]


def test_resume_rewrites_only_missing_or_broken_files(tmp_path, clotho):
    out, _ = clotho
    work = tmp_path / "work"
    generate(work, seed=7, **SMALL)
    (work / "development" / "synthcaps_00003.wav").unlink()
    broken = work / "evaluation" / "synthcaps_00011.wav"
    broken.write_bytes(broken.read_bytes()[:1000])  # a truncated file from a crash without atomic writes
    (work / "clotho_captions_validation.csv").unlink()
    (work / "development" / ".synthcaps-synthcaps_00004.wav-999.tmp").write_bytes(b"half")
    summary = generate(work, seed=7, **SMALL)
    assert (summary.written, summary.skipped) == (2, 10)
    assert _tree(work) == _tree(out)


def test_event_type_subset_is_respected(tmp_path):
    subset = ["whistle", "dog_bark", "rain"]
    generate(tmp_path, event_types=subset, **SMALL)
    seen = set()
    for split in ("development", "validation", "evaluation"):
        for item in json.loads((tmp_path / f"synthcaps_metadata_{split}.json").read_text()).values():
            seen |= {e["type"] for e in item["events"]}
    assert seen and seen <= set(subset)
    assert json.loads((tmp_path / "synthcaps.json").read_text())["event_types"] == sorted(subset)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(clips=2), "clips"),
    (dict(clips=12, layout="kaldi"), "clotho, audiocaps, wavcaps"),
    (dict(clips=12, event_types=["dog_bark", "theremin"]), "'theremin'; valid types: alarm"),
    (dict(clips=12, event_types=[]), "event_types"),
    (dict(clips=12, sample_rate=4000), "sample_rate"),
    (dict(clips=12, duration=0.0), "duration"),
    (dict(clips=12, split_fractions=(0.5, 0.5, 0.5)), "split_fractions"),
    (dict(clips=12, seed=-1), "seed"),
])
def test_bad_arguments_raise_input_error(tmp_path, kwargs, needle):
    with pytest.raises(InputError) as err:
        generate(tmp_path / "x", progress=False, **kwargs)
    assert needle in str(err.value)
    assert not (tmp_path / "x").exists()


def test_other_options_in_an_existing_folder_are_refused(tmp_path, clotho):
    out, _ = clotho
    with pytest.raises(InputError, match="other options"):
        generate(out, seed=8, **SMALL)


def test_failed_wav_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "a.wav"
    with pytest.raises(Exception):
        write_wav_atomic(target, np.zeros(10), sample_rate=-5)
    assert list(tmp_path.iterdir()) == []
