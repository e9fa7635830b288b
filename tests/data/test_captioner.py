"""Auxiliary captions: the file captioner, the simulated SynthCaps captioner and the extra training pairs."""
import json
from collections import Counter
from pathlib import Path

import pytest

from hade.data.captioner import Captioner, FileCaptioner, SynthCapsCaptioner, with_aux_pairs
from hade.data.readers import read_split
from hade.data.synthcaps import generate
from hade.data.types import Clip, SplitData
from hade.errors import InputError


@pytest.fixture(scope="module")
def synthcaps(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthcaps")
    generate(root, clips=30, sample_rate=8000, duration=1.0, progress=False)
    return root, read_split(root, "development")


def clips(*ids):
    return [Clip(i, Path(f"{i}.wav"), ("a reference caption",)) for i in ids]


def true_events(root, split, clip_id):
    meta = json.loads((root / f"synthcaps_metadata_{split}.json").read_text())
    return meta[clip_id]["events"]


def test_synthcaps_captioner_is_deterministic_per_seed(synthcaps):
    root, split = synthcaps
    first = SynthCapsCaptioner(root, "development", error_rate=0.3, seed=0).caption(split.clips)
    again = SynthCapsCaptioner(root, "train", error_rate=0.3, seed=0).caption(list(reversed(split.clips)))
    other = SynthCapsCaptioner(root, "development", error_rate=0.3, seed=1).caption(split.clips)
    assert set(first) == {c.clip_id for c in split.clips}
    assert first == again  # split alias, clip order: same captions
    assert first != other
    assert all(isinstance(c, str) and c.endswith(".") for c in first.values())
    assert isinstance(SynthCapsCaptioner(root, "development"), Captioner)


def test_error_rate_controls_detection_errors(synthcaps):
    root, split = synthcaps

    def wrong(rate):
        cap = SynthCapsCaptioner(root, "development", error_rate=rate, seed=3)
        bad = 0
        for clip in split.clips:
            truth = true_events(root, "development", clip.clip_id)
            got = cap.detect(clip.clip_id)
            key = lambda evs: Counter((e["type"], tuple(sorted(e["attributes"].items())), e["count"]) for e in evs)
            bad += key(got) != key(truth)
        return bad / len(split.clips)

    assert wrong(0.0) == 0.0
    assert wrong(0.5) > 0.5
    assert wrong(0.2) < wrong(0.8)


def test_error_free_caption_names_every_event(synthcaps):
    root, split = synthcaps
    from hade.data.synthcaps import EVENT_TYPES

    captions = SynthCapsCaptioner(root, "development", error_rate=0.0).caption(split.clips)
    for clip in split.clips:
        text = captions[clip.clip_id].lower()
        for ev in true_events(root, "development", clip.clip_id):
            spec = EVENT_TYPES[ev["type"]]
            names = [n.lower() for n in spec.nouns + spec.mass_nouns + spec.clauses]
            assert any(n.split()[-1][:4] in text for n in names), (ev["type"], text)


def test_synthcaps_captioner_errors(tmp_path, synthcaps):
    root, _ = synthcaps
    with pytest.raises(InputError, match="no SynthCaps metadata"):
        SynthCapsCaptioner(tmp_path, "development")
    with pytest.raises(InputError, match="error_rate"):
        SynthCapsCaptioner(root, "development", error_rate=1.5)
    with pytest.raises(InputError, match="no events for clip 'nope'"):
        SynthCapsCaptioner(root, "development").caption(clips("nope"))


def test_file_captioner_json_and_csv(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"c1": "a dog barks", "c2": " rain falls "}))
    (tmp_path / "b.json").write_text(json.dumps([{"clip_id": "c1", "caption": "a dog barks"}]))
    (tmp_path / "c.csv").write_text('file_name,caption\nc1,"a dog barks, then rain"\n\nc2,wind\n')
    assert FileCaptioner(tmp_path / "a.json").caption(clips("c1", "c2", "c3")) == {"c1": "a dog barks",
                                                                                   "c2": "rain falls"}
    assert FileCaptioner(tmp_path / "b.json").caption(clips("c1")) == {"c1": "a dog barks"}
    assert FileCaptioner(tmp_path / "c.csv").caption(clips("c2", "c1")) == {"c2": "wind",
                                                                            "c1": "a dog barks, then rain"}
    with pytest.raises(InputError, match="no auxiliary caption for 1 clip"):
        FileCaptioner(tmp_path / "a.json", strict=True).caption(clips("c1", "c3"))


@pytest.mark.parametrize("name,text,message", [
    ("bad.json", '{"c1": "a dog",\n "c2": }', r"bad\.json: line 2: invalid JSON"),
    ("empty.json", '{"c1": ""}', r"empty\.json: entry 'c1': caption of clip 'c1' must be a non-empty string"),
    ("list.json", '[{"caption": "x"}]', r"list\.json: item 0: expected an object with a clip id"),
    ("kind.json", '"just text"', r"kind\.json: expected a JSON object"),
    ("head.csv", "name,text\nc1,x\n", r"head\.csv: line 1: header must name a clip id column"),
    ("nocaption.csv", "clip_id,text\nc1,x\n", r"nocaption\.csv: line 1: header must name .* and 'caption', "
                                           r"got \['clip_id', 'text'\]"),
    ("clotho.csv", "file_name,caption_1,caption_2\nc1,x,y\n", r"clotho\.csv: line 1: header must name .* 'caption'"),
    ("dup.csv", "clip_id,caption\nc1,x\nc2,y\nc1,z\n",
     r"dup\.csv: line 4: clip 'c1' has a second caption \(first at line 2\)"),
    ("short.csv", "clip_id,caption\nc1,x\nc2\n", r"short\.csv: line 3: 1 fields, the header has 2"),
    ("blank.csv", "clip_id,caption\nc1,  \n", r"blank\.csv: line 2: caption of clip 'c1'"),
    ("caps.txt", "c1 x", r"caps\.txt: auxiliary captions must be a \.json or \.csv file"),
])
def test_file_captioner_errors_name_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message):
        FileCaptioner(tmp_path / name)


def test_missing_caption_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        FileCaptioner(tmp_path / "none.json")


def test_with_aux_pairs_appends_one_caption_per_clip():
    split = SplitData("development", [Clip("c1", Path("c1.wav"), ("a dog barks", "a dog is barking")),
                                      Clip("c2", Path("c2.wav"), ("rain",)), Clip("c3", Path("c3.wav"), ("wind",))])
    out = with_aux_pairs(split, {"c1": "a dog barks loudly", "c2": "Rain", "c4": "unused"})
    assert [c.captions for c in out.clips] == [("a dog barks", "a dog is barking", "a dog barks loudly"),
                                               ("rain",), ("wind",)]
    assert out.num_captions == split.num_captions + 1
    assert split.clips[0].captions == ("a dog barks", "a dog is barking")  # input untouched
