"""ONNX export of both towers (hade.models.onnx_export, `hade onnx`): ONNX Runtime's embeddings equal hade's
`embed_audio(per_window=True)` / `embed_text` vectors; heads without pooled vectors are refused.

One export costs ~10-25 s on one core (torch.export tracing), so each model is exported once per module."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import hade
from hade.cli import main
from hade.errors import InputError

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from hade.models import onnx_export  # noqa: E402
from hade.models.onnx_export import export_onnx, onnx_session, run_audio, run_text  # noqa: E402

# Observed: <= 3e-7 (audio, htsat-test and passt-test) and <= 1e-7 (text); float32 kernels differ in order.
ATOL = 1e-4
SHORT = ["a dog barks"]
LONG = ["Rain falls on a tin roof while thunder rumbles far away", "a car passes by", "BIRDS chirp, loudly!"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(config, head: str, audio_encoder: str = "htsat-test"):
    torch.manual_seed(0)
    return hade.create_model(dataclasses.replace(config, head=head, audio_encoder=audio_encoder,
                                                 text_config=None)).eval()


@pytest.fixture(scope="module")
def dp(tiny_model_config, tmp_path_factory):
    """A tiny DP model (captions lower-cased without punctuation, to test the pre-processing) and its export."""
    torch.set_num_threads(1)
    model = _model(dataclasses.replace(tiny_model_config, caption_normalize="dcase"), "dp")
    return model, export_onnx(model, tmp_path_factory.mktemp("onnx") / "dp")


def _waves(model, batch: int, samples: int, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((batch, samples))).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 3])
def test_audio_graph_equals_embed_audio(dp, batch):
    model, export = dp
    waves = _waves(model, batch, export.window_samples, seed=batch)
    got = run_audio(onnx_session(export.audio_path), waves)
    want = model.embed_audio(waves, sample_rate=model.sample_rate, per_window=True).vectors
    assert got.shape == want.shape == (batch, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_short_clip_zero_padded_to_the_window_equals_embed_audio(dp):
    """A clip shorter than a window: zero-padded at the end to window_samples, as `hade index` does."""
    model, export = dp
    clip = _waves(model, 1, export.window_samples // 3, seed=7)[0]
    padded = np.zeros((1, export.window_samples), np.float32)
    padded[0, :len(clip)] = clip
    got = run_audio(onnx_session(export.audio_path), padded)
    want = model.embed_audio(clip, sample_rate=model.sample_rate, per_window=True).vectors
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_long_clip_windows_and_pooling_as_the_readme_says_equal_embed_audio(dp):
    """Windows every hop_samples plus one at the end, mean of the window vectors, L2-normalised again."""
    from hade.data.windows import window_bounds

    model, export = dp
    clip = _waves(model, 1, int(2.3 * export.window_samples), seed=11)[0]
    windows = np.stack([clip[s:e] for s, e in window_bounds(len(clip), export.window_samples, export.hop_samples)])
    assert len(windows) == 4  # 0, hop, 2 hop and the tail's window
    vectors = run_audio(onnx_session(export.audio_path), windows)
    pooled = vectors.mean(0) / np.linalg.norm(vectors.mean(0))
    np.testing.assert_allclose(pooled[None], model.embed_audio(clip, sample_rate=model.sample_rate), atol=ATOL,
                               rtol=0)


def _tokenize(export, captions):
    """The pre-processing as onnx.json describes it, from the exported files alone."""
    from transformers import AutoTokenizer

    from hade.data.text import normalize_captions

    meta = json.loads((export.out_dir / "onnx.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(export.out_dir / meta["tokenizer"]))
    batch = tokenizer(normalize_captions(captions, meta["caption_normalize"]), padding=True, truncation=True,
                      max_length=meta["max_text_tokens"], return_tensors="np")
    return batch["input_ids"], batch["attention_mask"]


def test_text_graph_equals_embed_text_for_two_lengths_and_batches(dp):
    model, export = dp
    session = onnx_session(export.text_path)
    lengths = []
    for captions in (SHORT, LONG):
        ids, mask = _tokenize(export, captions)
        lengths.append(ids.shape[1])
        got = run_text(session, ids, mask)
        want = model.embed_text(captions)
        assert got.shape == want.shape == (len(captions), 32)
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    assert lengths[0] < lengths[1]  # the token axis is dynamic


def test_text_graph_needs_the_caption_normalisation(dp):
    """The graph does not normalise: the raw caption's tokens give another vector than hade's (which agrees
    to ~1e-7 with the graph on normalised tokens; the tiny random model moves little, hence 1e-5)."""
    model, export = dp
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(str(export.out_dir / "tokenizer"))(LONG[2:], return_tensors="np")
    ids, mask = _tokenize(export, LONG[2:])
    assert raw["input_ids"].tolist() != ids.tolist()
    session = onnx_session(export.text_path)
    want = model.embed_text(LONG[2:])
    np.testing.assert_allclose(run_text(session, ids, mask), want, atol=1e-6, rtol=0)
    assert np.abs(run_text(session, raw["input_ids"], raw["attention_mask"]) - want).max() > 1e-5


def test_json_describes_the_graphs(dp):
    model, export = dp
    meta = json.loads((export.out_dir / "onnx.json").read_text())
    assert sorted(p.name for p in export.out_dir.iterdir()) == ["audio.onnx", "onnx.json", "text.onnx", "tokenizer"]
    assert (meta["sample_rate"], meta["window_samples"], meta["embed_dim"]) == (8000, model.clip_samples, 32)
    assert meta["hop_samples"] == model.clip_samples // 2  # `hade index`'s default hop
    assert meta["exact_scores"] is True  # dp: the dot product of the two embeddings is its score
    assert meta["audio"]["weights_file"] is None and meta["text"]["weights_file"] is None  # small: inside
    assert (meta["head"], meta["caption_normalize"], meta["max_text_tokens"], meta["opset"]) == (
        "dp", "dcase", 24, 18)
    assert meta["hade_version"] == hade.__version__
    for tower in ("audio", "text"):
        session = onnx_session(export.out_dir / meta[tower]["file"])
        for described, actual in ((meta[tower]["inputs"], session.get_inputs()),
                                  (meta[tower]["outputs"], session.get_outputs())):
            assert [(t["name"], t["shape"]) for t in described] == [(a.name, a.shape) for a in actual]
            assert [t["dtype"] for t in described] == [{"tensor(float)": "float32", "tensor(int64)": "int64"}[a.type]
                                                       for a in actual]
    assert meta["audio"]["inputs"][0]["shape"] == ["batch", model.clip_samples]


def test_tha_is_refused_and_nothing_is_written(tiny_model_config, tmp_path):
    model = _model(tiny_model_config, "tha")
    with pytest.raises(InputError, match=r"head 'tha' cannot be exported to ONNX: it has no pooled vector.*"
                                         r"heads that can: .*tha\+dcr"):
        export_onnx(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hci_exports_its_sentence_and_clip_vectors(tiny_model_config, tmp_path):
    """HCI's towers compute only its pooled vectors (`text_vector` / `audio_vector`), not the word, phrase,
    frame and segment units whose pooling has data-dependent shapes; they equal hade's embeddings."""
    model = _model(tiny_model_config, "hci", audio_encoder="passt-test")
    export = export_onnx(model, tmp_path / "out")
    waves = _waves(model, 2, export.window_samples, seed=2)
    np.testing.assert_allclose(run_audio(onnx_session(export.audio_path), waves),
                               model.embed_audio(waves, sample_rate=model.sample_rate, per_window=True).vectors,
                               atol=ATOL, rtol=0)
    ids, mask = _tokenize(export, LONG)
    np.testing.assert_allclose(run_text(onnx_session(export.text_path), ids, mask), model.embed_text(LONG),
                               atol=ATOL, rtol=0)
    meta = json.loads((export.out_dir / "onnx.json").read_text())
    assert meta["head"] == "hci" and meta["exact_scores"] is False  # recall vectors, not HCI's full score


def test_large_weights_are_stored_beside_the_graph_and_the_folder_moves(dp, tmp_path, monkeypatch):
    """From EXTERNAL_WEIGHTS_BYTES on (1.5 GiB; here 0) a graph's weights go to "<file>.data" beside it,
    onnx.json names that file, and the folder still runs after a move (the reference is relative)."""
    model, _ = dp
    monkeypatch.setattr(onnx_export, "EXTERNAL_WEIGHTS_BYTES", 0)
    export = export_onnx(model, tmp_path / "out")
    assert (export.audio.weights_file, export.text.weights_file) == ("audio.onnx.data", "text.onnx.data")
    meta = json.loads((export.out_dir / "onnx.json").read_text())
    assert meta["audio"]["weights_file"] == "audio.onnx.data" and meta["text"]["weights_file"] == "text.onnx.data"
    assert (export.out_dir / "audio.onnx.data").stat().st_size > (export.out_dir / "audio.onnx").stat().st_size
    ids, mask = _tokenize(export, LONG)
    moved = tmp_path / "moved"
    export.out_dir.rename(moved)
    waves = _waves(model, 2, export.window_samples, seed=5)
    np.testing.assert_allclose(run_audio(onnx_session(moved / "audio.onnx"), waves),
                               model.embed_audio(waves, sample_rate=model.sample_rate, per_window=True).vectors,
                               atol=ATOL, rtol=0)
    np.testing.assert_allclose(run_text(onnx_session(moved / "text.onnx"), ids, mask), model.embed_text(LONG),
                               atol=ATOL, rtol=0)


def test_a_graph_that_does_not_trace_is_one_clear_error(dp, tmp_path, monkeypatch):
    """Code with data-dependent shapes (here a tower that pools over torch.unique's output) is one line
    naming the head, the graph and hade's line, and nothing is written."""
    model, _ = dp

    def data_dependent(self, waveform):
        from hade.models.heads.hci import time_pooling

        starts = (waveform[0] > 0).float()[:, None].expand(-1, 2)  # [T, 2]: two "time steps" from the data
        return (time_pooling(waveform.shape[1], starts, (1, waveform.shape[1])) @ waveform.T).T

    monkeypatch.setattr(onnx_export.AudioTower, "forward", data_dependent)
    with pytest.raises(InputError) as info:
        export_onnx(model, tmp_path / "out")
    message = str(info.value)
    assert message.startswith("head 'dp': audio.onnx does not export to ONNX at hci.py:"), message
    assert "(time_pooling)" in message
    assert "\n" not in message
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_bad_opset_and_non_empty_out_are_refused(dp, tmp_path):
    model, _ = dp
    with pytest.raises(InputError, match="--opset must be an integer >= 18"):
        export_onnx(model, tmp_path / "a", opset=17)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty; use --force"):
        export_onnx(model, tmp_path / "b")
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine"


def test_missing_packages_name_the_extra(dp, tmp_path, monkeypatch):
    model, _ = dp
    real = onnx_export.importlib.util.find_spec
    monkeypatch.setattr(onnx_export.importlib.util, "find_spec", lambda n: None if n == "onnxscript" else real(n))
    with pytest.raises(InputError, match=r"needs the package\(s\) onnxscript: pip install 'hade\[onnx\]'"):
        export_onnx(model, tmp_path / "out")


def test_library_imports_without_loading_onnx():
    code = "import sys, hade.models.onnx_export; print(sorted({'onnx', 'onnxscript', 'onnxruntime'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- the command line ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ckpts(tiny_model_config, tmp_path_factory):
    from hade.checkpoint import save_model

    root = tmp_path_factory.mktemp("onnx-ckpt")
    save_model(_model(tiny_model_config, "tha+dcr", audio_encoder="passt-test"), root / "tha+dcr")
    save_model(_model(tiny_model_config, "tha"), root / "tha")
    return root


def test_cli_exports_tha_dcr_with_passt_and_checks(ckpts, tmp_path, capsys):
    """tha+dcr (its pooled DCR part) with the PaSST encoder (the other STFT front end)."""
    out = tmp_path / "onnx"
    assert main(["onnx", str(ckpts / "tha+dcr"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    model = hade.load(ckpts / "tha+dcr")
    assert f"wrote audio.onnx (waveform [batch, {model.clip_samples}] at {model.sample_rate} Hz)" in printed
    line = next(s for s in printed.splitlines() if s.startswith("check (ONNX Runtime vs hade, max abs difference)"))
    diffs = [float(w.strip(",")) for w in line.split() if w[0].isdigit() and "e" in w]
    assert len(diffs) == 2 and max(diffs) < ATOL
    meta = json.loads((out / "onnx.json").read_text())
    assert meta["head"] == "tha+dcr" and meta["exact_scores"] is False
    assert "note: head 'tha+dcr' is not one dot product: the embeddings are its recall vectors" in printed
    # the pooled DCR part of tha+dcr is what the graphs return
    waves = _waves(model, 3, model.clip_samples, seed=5)
    np.testing.assert_allclose(run_audio(onnx_session(out / "audio.onnx"), waves),
                               model.embed_audio(waves, sample_rate=model.sample_rate, per_window=True).vectors,
                               atol=ATOL, rtol=0)

    # an existing non-empty --out: one line, exit 2, before anything is loaded
    assert main(["onnx", str(ckpts / "tha+dcr"), "--out", str(out), "--no-check"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hade onnx: error: --out ") and err.endswith("use --force to replace it")
    assert "\n" not in err


@pytest.mark.parametrize("which, message", [("tha", "head 'tha' cannot be exported to ONNX"),
                                            ("missing", "not a hade checkpoint")])
def test_cli_bad_input_is_one_line_exit_2(ckpts, tmp_path, capsys, which, message):
    assert main(["onnx", str(ckpts / which), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hade onnx: error: ") and message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_beats_front_end_exports(tiny_model_config, tmp_path):
    """BEATs' Kaldi filterbank front end exports inside the audio graph like HTSAT's and PaSST's STFT."""
    from hade.models.onnx_export import check_export

    model = _model(tiny_model_config, "dp", audio_encoder="beats-test")
    check = check_export(model, export_onnx(model, tmp_path / "beats"))
    assert check.audio_max_abs_diff < ATOL and check.text_max_abs_diff < ATOL
