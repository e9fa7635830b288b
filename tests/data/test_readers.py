from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hade.data.readers import canonical_split, detect_layout, layout_split_name, read_split
from hade.errors import InputError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def copy_fixture(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(FIXTURES / name, dst)
    return dst


def tiny_wav(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(160, np.float32), 16000)
    return path


# ----------------------------------------------------------------------------- fixtures, happy path


def test_clotho_fixture():
    root = FIXTURES / "clotho"
    assert detect_layout(root) == "clotho"
    dev = read_split(root, "development")
    assert dev.name == "development" and dev.problems == []
    assert [c.clip_id for c in dev.clips] == ["rain on roof.wav", "dog_bark.wav", "birds.wav"]
    assert dev.num_captions == 15
    assert dev.clips[0].audio_path == root / "development" / "rain on roof.wav"
    assert dev.clips[0].captions[3] == "Rain pours steadily, on a roof."
    assert dev.clips[1].captions[3] == 'A dog barks "loudly" outside.'
    val = read_split(root, "validation")
    assert [c.clip_id for c in val.clips] == ["car.wav", "bell.wav"]
    assert all(c.audio_path.parent == root / "validation" for c in val.clips)


def test_audiocaps_fixture_groups_rows_and_finds_audio_variants():
    root = FIXTURES / "audiocaps"
    assert detect_layout(root) == "audiocaps"
    train = read_split(root, "train")
    assert train.problems == []
    assert [c.clip_id for c in train.clips] == ["abc123XYZ_0", "-def456uvw1", "ghi789rst-2"]
    assert train.clips[0].captions == ("A man speaks over wind noise", "Wind blows while a man talks")
    assert [c.audio_path.name for c in train.clips] == ["abc123XYZ_0.wav", "Y-def456uvw1.wav", "ghi789rst-2.flac"]
    test = read_split(root, "test")
    assert len(test.clips) == 2 and test.num_captions == 10
    assert test.clips[1].captions[0] == "People clap (1)"


def test_wavcaps_fixture():
    root = FIXTURES / "wavcaps"
    assert detect_layout(root) == "wavcaps"
    train = read_split(root, "train")
    assert train.problems == []
    assert [c.clip_id for c in train.clips] == ["fsd_1001", "bbc_2002", "3003"]
    assert train.clips[0].audio_path == root / "audio" / "fsd_1001.wav"
    assert train.clips[1].audio_path == root / "train" / "bbc_2002.flac"  # no "audio": ROOT/{split}/{id}.flac
    assert train.clips[2].captions == ("A phone rings.", "A telephone is ringing.", "Ringtone of a phone.")


def test_manifest_fixture():
    root = FIXTURES / "manifest"
    assert detect_layout(root) == "manifest"
    train = read_split(root, "train")
    assert train.problems == []
    assert [c.clip_id for c in train.clips] == ["kettle", "audio/steps.wav", "crowd"]
    assert train.clips[0].audio_path == root / "audio" / "kettle.wav"
    assert train.num_captions == 6


@pytest.mark.parametrize(
    "layout,alias,expected_file",
    [
        ("clotho", "train", "development"),
        ("clotho", "dev", "development"),
        ("clotho", "val", "validation"),
        ("audiocaps", "development", "train"),
        ("audiocaps", "evaluation", "test"),
        ("wavcaps", "development", "train"),
        ("manifest", "development", "train"),
    ],
)
def test_split_aliases(layout, alias, expected_file):
    data = read_split(FIXTURES / layout, alias)
    assert data.name == alias and len(data.clips) > 0
    assert layout_split_name(layout, alias) == expected_file


def test_canonical_split():
    assert canonical_split("Development") == "train"
    assert canonical_split("validation") == "val"
    assert canonical_split("evaluation") == "test"
    assert canonical_split("other") is None


def test_direct_file_paths():
    clotho = read_split(FIXTURES / "clotho" / "clotho_captions_validation.csv")
    assert clotho.name == "validation" and len(clotho.clips) == 2
    ac = read_split(FIXTURES / "audiocaps" / "train.csv", "mine")
    assert ac.name == "mine" and len(ac.clips) == 3
    assert detect_layout(FIXTURES / "wavcaps" / "train.json") == "wavcaps"
    assert len(read_split(FIXTURES / "manifest" / "train.jsonl").clips) == 3


def test_unknown_split_and_layout():
    with pytest.raises(InputError, match=r"found splits: development, validation"):
        read_split(FIXTURES / "clotho", "test")
    with pytest.raises(InputError, match="unknown data layout 'foo'"):
        read_split(FIXTURES / "clotho", "train", layout="foo")
    with pytest.raises(InputError, match="split name is required"):
        read_split(FIXTURES / "clotho")


def test_detect_layout_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match=r"no known data layout.*notes\.txt"):
        detect_layout(tmp_path)
    with pytest.raises(InputError, match="not found"):
        detect_layout(tmp_path / "missing")
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="cannot tell the layout"):
        detect_layout(odd)


def test_mixed_directory_needs_layout_or_unique_split(tmp_path):
    root = copy_fixture("clotho", tmp_path)
    shutil.copy(FIXTURES / "manifest" / "train.jsonl", root / "extra.jsonl")
    assert detect_layout(root, "validation") == "clotho"
    with pytest.raises(InputError, match="several data layouts"):
        detect_layout(root)
    assert len(read_split(root, "extra", layout="manifest", verify_audio=False).clips) == 3


# ----------------------------------------------------------------------------- bad items -> Problems


def test_missing_and_corrupt_audio_become_problems(tmp_path):
    root = copy_fixture("clotho", tmp_path)
    (root / "development" / "dog_bark.wav").unlink()
    (root / "development" / "birds.wav").write_bytes(b"RIFF garbage, not audio" * 10)
    dev = read_split(root, "train")
    assert [c.clip_id for c in dev.clips] == ["rain on roof.wav"]  # nothing else lost
    assert dev.num_captions == 5
    sources = {p.source: p.reason for p in dev.problems}
    missing = str(root / "development" / "dog_bark.wav")
    corrupt = str(root / "development" / "birds.wav")
    assert "not found" in sources[missing] and "dog_bark.wav" in sources[missing]
    assert "corrupt" in sources[corrupt]
    # without verification the clips are kept (the audio store finds them later)
    assert len(read_split(root, "train", verify_audio=False).clips) == 3


def test_empty_captions_are_problems_naming_line_and_column(tmp_path):
    csv_path = tmp_path / "clotho_captions_development.csv"
    csv_path.write_text(
        "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
        "a.wav,  One  ,,Three,   ,Five\n"
        "b.wav,,,,,\n"
    )
    tiny_wav(tmp_path / "development" / "a.wav")
    tiny_wav(tmp_path / "development" / "b.wav")
    data = read_split(tmp_path, "development")
    assert [c.clip_id for c in data.clips] == ["a.wav"]
    assert data.clips[0].captions == ("One", "Three", "Five")
    srcs = [(p.source, p.reason) for p in data.problems]
    assert (f"{csv_path}:2", "empty caption in column 'caption_2'; caption dropped") in srcs
    assert any(s == f"{csv_path}:2" and "caption_4" in r for s, r in srcs)
    assert any(s == f"{csv_path}:3" and "no non-empty caption" in r and "b.wav" in r for s, r in srcs)
    assert len(data.problems) == 2 + 5 + 1


def test_audiocaps_missing_audio_and_empty_caption(tmp_path):
    root = copy_fixture("audiocaps", tmp_path)
    (root / "train" / "ghi789rst-2.flac").unlink()
    with open(root / "train.csv", "a") as f:
        f.write("105,abc123XYZ_0,30,   \n")
    data = read_split(root, "train")
    assert [c.clip_id for c in data.clips] == ["abc123XYZ_0", "-def456uvw1"]
    assert len(data.clips[0].captions) == 2
    reasons = {p.source: p.reason for p in data.problems}
    assert "empty caption in column 'caption'" in reasons[f"{root / 'train.csv'}:6"]
    missing = reasons[str(root / "train" / "ghi789rst-2.wav")]
    assert "not found" in missing and "Yghi789rst-2.flac" in missing


def test_audiocaps_clips_downloaded_as_m4a_or_webm(tmp_path, encode_av):
    """YouTube downloads come as M4A or WebM: a clip named by its id alone is found in those too."""
    root = copy_fixture("audiocaps", tmp_path)
    (root / "train" / "ghi789rst-2.flac").unlink()
    (root / "train" / "abc123XYZ_0.wav").unlink()
    tone = np.sin(np.arange(48000) / 5).astype(np.float32) * 0.2
    encode_av(root / "train" / "ghi789rst-2.m4a", tone, 48000, "m4a")
    encode_av(root / "train" / "Yabc123XYZ_0.webm", tone, 48000, "webm")
    data = read_split(root, "train")
    assert data.problems == []
    assert [c.audio_path.name for c in data.clips] == ["Yabc123XYZ_0.webm", "Y-def456uvw1.wav", "ghi789rst-2.m4a"]


def test_wavcaps_bad_items(tmp_path):
    doc = {"data": [
        {"id": "a", "audio": "a.wav", "caption": " ok "},
        {"id": "b", "audio": "missing.wav", "caption": "x"},
        {"id": "c", "audio": str(tiny_wav(tmp_path / "abs" / "c.wav")), "caption_1": "", "caption_2": "fine"},
        {"id": "d", "audio": "a.wav", "caption": "   "},
    ]}
    tiny_wav(tmp_path / "a.wav")
    (tmp_path / "train.json").write_text(json.dumps(doc))
    data = read_split(tmp_path / "train.json")
    assert [c.clip_id for c in data.clips] == ["a", "c"]
    assert data.clips[0].captions == ("ok",)
    assert data.clips[1].audio_path == tmp_path / "abs" / "c.wav"  # absolute path kept
    reasons = [(p.source, p.reason) for p in data.problems]
    assert any(s == str(tmp_path / "missing.wav") for s, _ in reasons)
    assert any("data[2]" in s and "caption_1" in r for s, r in reasons)
    assert any("data[3]" in s and "no non-empty caption" in r for s, r in reasons)


def test_manifest_bad_items_and_merge(tmp_path):
    tiny_wav(tmp_path / "a.wav")
    lines = [
        {"audio": "a.wav", "captions": ["one", ""], "id": "a"},
        {"audio": "a.wav", "captions": ["two"], "id": "a"},  # same clip: merged
        {"audio": "gone.wav", "captions": ["x"]},
        {"audio": "a.wav", "captions": ["  "], "id": "z"},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    data = read_split(tmp_path, "train")
    assert [(c.clip_id, c.captions) for c in data.clips] == [("a", ("one", "two"))]
    reasons = [(p.source, p.reason) for p in data.problems]
    assert (f"{path}:1", "empty caption in column 'captions[1]'; caption dropped") in reasons
    assert any(s == str(tmp_path / "gone.wav") and "not found" in r for s, r in reasons)
    assert any(s == f"{path}:4" and "no non-empty caption" in r for s, r in reasons)


# ----------------------------------------------------------------------------- structural errors


def test_missing_caption_file(tmp_path):
    with pytest.raises(InputError, match=r"data path not found: .*train\.csv"):
        read_split(tmp_path / "train.csv", layout="audiocaps")


def test_empty_csv_file(tmp_path):
    path = tmp_path / "clotho_captions_development.csv"
    path.write_text("")
    with pytest.raises(InputError, match=r"file is empty; expected a CSV header line 'file_name,caption_1") as ei:
        read_split(tmp_path, "development")
    assert str(path) in str(ei.value)


def test_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "clotho_captions_development.csv"
    path.write_text("name,caption_1,caption_2\nx.wav,a,b\n")
    with pytest.raises(InputError) as ei:
        read_split(path, layout="clotho")
    msg = str(ei.value)
    assert str(path) in msg and "missing required column(s) 'file_name'" in msg and "found 'name,caption_1,caption_2'" in msg
    ac = tmp_path / "train.csv"
    ac.write_text("audiocap_id,youtube_id,start_time\n1,abc,0\n")
    with pytest.raises(InputError, match=r"train\.csv:1: missing required column\(s\) 'caption'"):
        read_split(ac, layout="audiocaps")


def test_wrong_field_count_names_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("audiocap_id,youtube_id,start_time,caption\n1,abc,0,hello\n2,abc,0\n")
    with pytest.raises(InputError, match=r"train\.csv:3: expected 4 fields"):
        read_split(path, verify_audio=False)


def test_invalid_json(tmp_path):
    path = tmp_path / "train.json"
    path.write_text('{"data": [\n  {"id": "a", "caption": "x"},\n  {"id": "b" "caption": "y"}\n]}\n')
    with pytest.raises(InputError, match=r"train\.json:3: invalid JSON at column"):
        read_split(tmp_path, "train")
    path.write_text("")
    with pytest.raises(InputError, match="file is empty"):
        read_split(path)


@pytest.mark.parametrize(
    "doc,match",
    [
        ([1, 2], "expected a JSON object with a 'data' array, found array"),
        ({"data": {"id": 1}}, "field 'data': expected an array"),
        ({"data": [{"caption": "x"}]}, r"data\[0\]: missing field 'id'"),
        ({"data": [{"id": [1], "caption": "x"}]}, r"data\[0\]\.id: expected a string or number, found array"),
        ({"data": [{"id": "a"}]}, r"data\[0\]: missing field 'caption'"),
        ({"data": [{"id": "a", "caption": 5}]}, r"data\[0\]\.caption: expected a string caption, found number"),
        ({"data": [{"id": "a", "caption": "x", "audio": 3}]}, r"data\[0\]\.audio: expected a non-empty path"),
        ({"data": [], "num_captions_per_audio": "5"}, "num_captions_per_audio"),
    ],
)
def test_wavcaps_wrong_types(tmp_path, doc, match):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=match):
        read_split(path, verify_audio=False)


def test_invalid_jsonl_line_named(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_text('{"audio": "a.wav", "captions": ["x"]}\n\n{"audio": "b.wav", "captions": ["y"\n')
    with pytest.raises(InputError, match=r"val\.jsonl:3: invalid JSON at column \d+"):
        read_split(tmp_path, "validation")


@pytest.mark.parametrize(
    "line,match",
    [
        ('["a.wav"]', "expected a JSON object"),
        ('{"captions": ["x"]}', "missing field 'audio'"),
        ('{"audio": "a.wav"}', "missing field 'captions'"),
        ('{"audio": "a.wav", "captions": "x"}', "field 'captions': expected an array of strings, found string"),
        ('{"audio": "a.wav", "captions": ["x", 2]}', r"field 'captions\[1\]': expected a string, found number"),
        ('{"audio": 1, "captions": ["x"]}', "field 'audio': expected a non-empty path string"),
    ],
)
def test_manifest_wrong_types(tmp_path, line, match):
    path = tmp_path / "test.jsonl"
    path.write_text('{"audio": "ok.wav", "captions": ["fine"]}\n' + line + "\n")
    with pytest.raises(InputError, match=rf"test\.jsonl:2: {match}"):
        read_split(path, verify_audio=False)


def test_non_utf8_csv(tmp_path):
    path = tmp_path / "clotho_captions_evaluation.csv"
    path.write_bytes(b"file_name,caption_1\nx.wav,caf\xe9\n")
    with pytest.raises(InputError, match=r"clotho_captions_evaluation\.csv:2: not valid UTF-8"):
        read_split(tmp_path, "test")


# ----------------------------------------------------------------------------- missing caption columns

CLOTHO_HEADER = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5"


@pytest.mark.parametrize("header,missing", [
    ("file_name,caption_1,caption_2,caption_4,caption_5", "caption_3"),
    ("file_name,caption_1,caption_2,caption_4", "caption_3, caption_5"),
    ("file_name,caption_1,caption_2,caption_3", "caption_4, caption_5"),
    ("file_name,caption_1", "caption_2, caption_3, caption_4, caption_5"),
])
def test_clotho_file_missing_a_caption_column_is_an_error(tmp_path, header, missing):
    path = tmp_path / "clotho_captions_development.csv"
    path.write_text(header + "\n" + "a.wav" + ",x" * header.count("caption_") + "\n")
    tiny_wav(tmp_path / "development" / "a.wav")
    with pytest.raises(InputError) as info:
        read_split(tmp_path, "development")
    assert str(info.value) == (f"{path}: missing caption column(s) {missing}; expected header '{CLOTHO_HEADER}', "
                               f"found '{header}'")


def test_other_csv_in_clotho_layout_may_have_fewer_captions_with_a_warning(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("file_name,caption_1,caption_2\na.wav,one,two\n")
    tiny_wav(tmp_path / "mine" / "a.wav")
    with pytest.warns(UserWarning, match=r"mine\.csv: only 2 caption column\(s\); Clotho has 5 \(missing caption_3, "
                                         r"caption_4, caption_5\)"):
        data = read_split(path)
    assert data.clips[0].captions == ("one", "two")
    path.write_text("file_name,caption_1,caption_3\na.wav,one,three\n")  # a gap is never fine
    with pytest.raises(InputError, match=r"mine\.csv: missing caption column\(s\) caption_2, caption_4, caption_5"):
        read_split(path)


@pytest.mark.parametrize("where", ["directory", "file", "layout"])
def test_audiocaps_csv_without_caption_column_is_an_error(tmp_path, where):
    path = tmp_path / "train.csv"
    path.write_text("audiocap_id,youtube_id,start_time\n1,abc,0\n")
    root, kw = {"directory": (tmp_path, {}), "file": (path, {}), "layout": (tmp_path, {"layout": "audiocaps"})}[where]
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}:1: missing required column\(s\) 'caption'; "
                                         r"expected header 'audiocap_id,youtube_id,start_time,caption'"):
        read_split(root, "train", **kw)
