"""Zero-shot classification (hade.eval.zero_shot, `hade classify`) and a converted model through eval,
index/search and classify: a tiny random hade model written in WavCaps' layout and converted back by
`hade convert --tokenizer`."""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import hade
from _scripts import load_script
from hade.cli import main
from hade.errors import InputError
from hade.eval import zero_shot
from hade.eval.zero_shot import ZeroShotClassifier, classification_metrics, read_labels

_wavcaps = load_script("tests/models/_wavcaps_layout.py")

LABELS = ["dog barking", "rain", "siren", "birds"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_model_config):
    """(converted checkpoint dir, the hade model it was written from)."""
    root = tmp_path_factory.mktemp("converted")
    torch.manual_seed(0)
    source = hade.create_model(dataclasses.replace(tiny_model_config, head="dp", text_config=None)).eval()
    torch.save(_wavcaps.wavcaps_checkpoint_from_hade(source, temp=0.05), root / "wavcaps.pt")
    source.tokenizer.save_pretrained(str(root / "tok"))
    heads = tiny_model_config.text_overrides["num_attention_heads"]
    assert main(["convert", str(root / "wavcaps.pt"), "--out", str(root / "ckpt"), "--tokenizer", str(root / "tok"),
                 "--text-overrides", json.dumps({"num_attention_heads": heads})]) == 0
    return root / "ckpt", source


def _tone(path: Path, seconds: float, freq: float, rate: int = 8000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)
    return path


def test_the_converted_model_scores_as_the_model_it_came_from(converted):
    ckpt, source = converted
    model = hade.load(ckpt)
    assert model.config.head_options["logit_scale"] == pytest.approx(20.0)
    wave = torch.randn(2, 8000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(model.encode_audio(wave)["embed"], source.encode_audio(wave)["embed"])
        torch.testing.assert_close(model.encode_text(["a dog barks"])["embed"],
                                   source.encode_text(["a dog barks"])["embed"])


def test_labels_and_templates():
    assert read_labels("dog, rain ,siren") == ["dog", "rain", "siren"]
    assert zero_shot.prompts(["dog"]) == ["This is a sound of dog."]
    with pytest.raises(InputError, match="label"):
        zero_shot.prompts(["dog"], "a sound")
    with pytest.raises(InputError, match="more than once"):
        read_labels(["dog", "dog"])
    with pytest.raises(InputError, match="no labels"):
        read_labels(" , ")


def test_classifier_scores_are_the_models_and_long_files_get_windows(converted, tmp_path):
    ckpt, _ = converted
    model = hade.load(ckpt)
    clf = ZeroShotClassifier(model, LABELS, template="the sound of {label}")
    short = _tone(tmp_path / "short.wav", 0.7, 440.0)
    result = clf.classify_file(short, top_k=3)
    assert len(result.top) == 3 and not result.windows
    wave = torch.zeros(1, model.clip_samples)
    wave[0, :5600] = torch.from_numpy(sf.read(str(short), dtype="float32")[0])
    with torch.no_grad():
        expected = model.score(model.encode_text([f"the sound of {x}" for x in LABELS]), model.encode_audio(wave))[:, 0]
    best = int(torch.argmax(expected))
    assert result.top[0].label == LABELS[best] and result.top[0].score == pytest.approx(float(expected[best]), abs=1e-5)
    probs = torch.softmax(expected * 20.0, 0)
    assert result.top[0].probability == pytest.approx(float(probs[best]), abs=1e-5)
    assert [p.score for p in result.top] == sorted((p.score for p in result.top), reverse=True)
    long = clf.classify_file(_tone(tmp_path / "long.wav", 5.0, 880.0), top_k=2)  # windows of 2.05 s
    assert len(long.windows) >= 3 and all(len(w.top) == 2 for w in long.windows)
    assert long.windows[0].start == 0.0 and long.windows[-1].end == pytest.approx(5.0)


def test_cli_json_and_csv(converted, tmp_path, capsys):
    ckpt, _ = converted
    files = [str(_tone(tmp_path / "a.wav", 0.8, 300.0)), str(_tone(tmp_path / "b.wav", 2.2, 1200.0))]
    (tmp_path / "labels.txt").write_text("# classes\n" + "\n".join(LABELS) + "\n")
    assert main(["classify", "--ckpt", str(ckpt), "--labels", str(tmp_path / "labels.txt"), "--top-k", "2",
                 "--out", str(tmp_path / "out.json"), *files]) == 0
    data = json.loads((tmp_path / "out.json").read_text())["results"]
    assert [d["path"] for d in data] == files and all(len(d["top"]) == 2 for d in data)
    assert not data[0]["windows"] and data[1]["windows"]
    assert set(data[0]["top"][0]) == {"label", "score", "probability"}
    assert "a.wav" in capsys.readouterr().out
    # --json prints the same JSON to stdout, as other commands do
    assert main(["classify", "--ckpt", str(ckpt), "--labels", str(tmp_path / "labels.txt"), "--top-k", "2",
                 "--json", "--quiet", *files]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((tmp_path / "out.json").read_text())
    assert main(["classify", "--ckpt", str(ckpt), "--labels", ",".join(LABELS), "--csv", str(tmp_path / "out.csv"),
                 "--top-k", "1", files[0]]) == 0
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert len(rows) == 1 and rows[0]["label"] in LABELS and rows[0]["rank"] == "1"
    assert main(["classify", "--ckpt", str(ckpt), files[0]]) == 2  # --labels missing: a clear error, exit 2
    assert "--labels" in capsys.readouterr().err


def test_classify_skips_undecodable_files_takes_folders_and_shows_progress(converted, tmp_path, capsys):
    ckpt, _ = converted
    sounds = tmp_path / "sounds"
    (sounds / "deep" / "er").mkdir(parents=True)
    good = [_tone(sounds / "a.wav", 0.8, 300.0), _tone(sounds / "deep" / "er" / "b.flac", 0.6, 900.0)]
    (sounds / "deep" / "broken.wav").write_bytes(b"RIFF\x00\x00not audio at all")
    (sounds / "notes.txt").write_text("not audio: not picked up from a folder")
    (sounds / ".hidden.wav").write_bytes(b"")
    code = main(["classify", "--ckpt", str(ckpt), "--labels", ",".join(LABELS), "--json", str(sounds)])
    captured = capsys.readouterr()
    assert code == 0
    data = json.loads(captured.out)
    assert [d["path"] for d in data["results"]] == sorted(str(p) for p in good)
    assert [d["path"] for d in data["skipped"]] == [str(sounds / "deep" / "broken.wav")] and data["skipped"][0]["reason"]
    assert f"hade classify: skipped {sounds / 'deep' / 'broken.wav'}:" in captured.err
    assert "classify: 100%" in captured.err and "3/3" in captured.err  # tqdm's bar, on stderr
    # a folder with nothing decodable: one clear line
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.wav").write_bytes(b"garbage")
    assert main(["classify", "--ckpt", str(ckpt), "--labels", ",".join(LABELS), "--quiet", str(tmp_path / "bad")]) == 2
    assert "none of the 1 audio files could be decoded" in capsys.readouterr().err
    # a mistyped path is an error, never a silent skip; --json FILE (its former meaning) gets a hint
    assert main(["classify", "--ckpt", str(ckpt), "--labels", "a,b", "--json", str(tmp_path / "out.json"),
                 str(good[0])]) == 2
    assert "out.json: no such audio file or folder (--json prints to stdout now" in capsys.readouterr().err


def test_eval_skips_undecodable_files(converted, tmp_path):
    ckpt, _ = converted
    folders = _class_folders(tmp_path / "folders")
    (folders / "siren" / "broken.wav").write_bytes(b"RIFF garbage")
    result = zero_shot.evaluate(hade.load(ckpt), folders)
    assert result.files == 4 and [s.path for s in result.skipped] == [str(folders / "siren" / "broken.wav")]


def test_a_labels_path_that_does_not_exist_is_an_error_and_a_bom_is_dropped(tmp_path):
    for spec in ("labelz.txt", "labels.csv", f"{tmp_path}/labels", "sub/labels"):
        with pytest.raises(InputError, match="labels file .*: not found"):
            read_labels(spec)
    assert read_labels("dog barking, rain") == ["dog barking", "rain"]  # labels themselves still work
    (tmp_path / "labels.txt").write_bytes("\ufeffdog\nrain\n".encode("utf-8"))
    assert read_labels(str(tmp_path / "labels.txt")) == ["dog", "rain"]


def test_metrics_on_known_scores():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.8]])
    truth = np.array([0, 1, 1, 2])
    m = classification_metrics(scores, truth, top_k=2)
    assert m.accuracy == 75.0 and m.top_k == 2 and m.top_k_accuracy == 100.0 and "top2_accuracy" in m.to_dict()
    # AP: class 0 ranks [0, 2, 1, 3] -> relevant first: 1; class 1 ranks [1, 2, 3, 0]: 1/1, 2/2 -> 1;
    # class 2 ranks 3 first -> 1
    assert m.mAP == 100.0
    m = classification_metrics(np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([0, 1]))
    assert m.accuracy == 0.0 and m.mAP == 50.0 and m.top_k == 2  # capped at the number of labels


def _class_folders(root: Path) -> Path:
    for name, freq in (("dog barking", 300.0), ("siren", 1500.0)):
        (root / name).mkdir(parents=True)
        for i in range(2):
            _tone(root / name / f"{i}.wav", 0.6 + 0.2 * i, freq * (1 + 0.1 * i))
    return root


def test_eval_on_class_folders_and_esc50_layout(converted, tmp_path, capsys):
    ckpt, _ = converted
    model = hade.load(ckpt)
    folders = _class_folders(tmp_path / "folders")
    result = zero_shot.evaluate(model, folders)
    assert result.files == 4 and result.classes == 2 and 0.0 <= result.accuracy <= 100.0
    # the same files in ESC-50's layout give the same numbers
    esc = tmp_path / "esc"
    (esc / "audio").mkdir(parents=True)
    (esc / "meta").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for target, name in enumerate(("dog barking", "siren")):
        for f in sorted((folders / name).iterdir()):
            (esc / "audio" / f"{target}-{f.name}").write_bytes(f.read_bytes())
            rows.append(f"{target}-{f.name},1,{target},{name},False,x,A")
    (esc / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    assert main(["classify", "--ckpt", str(ckpt), "--eval", str(esc), "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["accuracy"] == result.accuracy and metrics["mAP"] == pytest.approx(result.mAP)
    assert set(metrics) == {"files", "classes", "accuracy", "top2_accuracy", "mAP", "template", "folder", "skipped"}
    # distractor labels are allowed; a class missing from the labels is not
    assert zero_shot.evaluate(model, folders, labels=["dog barking", "siren", "rain"]).classes == 3
    with pytest.raises(InputError, match="not among the labels"):
        zero_shot.evaluate(model, folders, labels=["dog barking"])


def test_converted_model_runs_eval_index_and_search(converted, tmp_path, capsys):
    from hade.data.synthcaps import generate

    ckpt, _ = converted
    data = tmp_path / "d"
    generate(data, clips=10, seed=5, sample_rate=8000, duration=1.0, progress=False)
    assert main(["eval", "--ckpt", str(ckpt), "--data", str(data), "--clip-seconds", "1.0", "--quiet",
                 "--out", str(tmp_path / "eval.json")]) == 0
    assert "R@1" in json.loads((tmp_path / "eval.json").read_text())["t2a"]
    assert main(["index", str(data), "--ckpt", str(ckpt), "--out", str(tmp_path / "idx"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "a dog barks"]) == 0
    assert ".wav" in capsys.readouterr().out


def test_converted_model_serves_and_explains(converted, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from hade.data.synthcaps import generate
    from hade.serve.app import create_app

    ckpt, _ = converted
    data = tmp_path / "d"
    generate(data, clips=6, seed=6, sample_rate=8000, duration=1.0, progress=False)
    assert main(["index", str(data), "--ckpt", str(ckpt), "--out", str(tmp_path / "idx"), "--quiet"]) == 0
    client = TestClient(create_app(hade.Index.open(tmp_path / "idx")), base_url="http://localhost")
    hits = client.get("/search", params={"q": "a dog barks", "k": 3})
    assert hits.status_code == 200, hits.text
    body = hits.json()
    results = body["results"] if isinstance(body, dict) else body
    assert len(results) == 3
    assert client.get(f"/audio/{results[0]['id']}").status_code == 200

    clip = next(data.rglob("*.wav"))
    capsys.readouterr()
    assert main(["explain", "--ckpt", str(ckpt), "--audio", str(clip), "--text", "a dog barks",
                 "--out", str(tmp_path / "fig"), "--json"]) == 0
    explanation = json.loads((tmp_path / "fig" / "explanation.json").read_text())
    assert np.isfinite(explanation["score"])


@pytest.mark.parametrize("row, message", [("1-a.wav,1", "expected a filename and a category"),
                                          ("1-a.wav,1,dog,dog barking,False,x,A", "target must be a whole number")])
def test_esc50_rows_that_are_short_or_have_a_non_numeric_target_are_named(tmp_path, row, message):
    """Issue 24: a short row or a non-numeric target in meta/esc50.csv gave a traceback."""
    (tmp_path / "meta").mkdir()
    (tmp_path / "audio").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("filename,fold,target,category,esc10,src_file,take\n"
                                                 "0-b.wav,1,0,siren,False,x,A\n" + row + "\n")
    with pytest.raises(InputError, match=f"esc50.csv:3: {message}"):
        zero_shot._esc50(tmp_path)
