"""The evaluation pass: each clip decoded and encoded once, undecodable clips dropped and reported."""
import pytest
import torch

import hade
import hade.eval.evaluate as evaluate_mod
from hade.data.readers import read_split
from hade.data.synthcaps import generate
from hade.errors import InputError
from hade.eval.evaluate import encode_split, evaluate


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate(root, clips=40, seed=0, sample_rate=8000, duration=1.0, progress=False)
    return read_split(root, "evaluation")


@pytest.fixture(scope="module")
def model(tiny_model_config):
    torch.manual_seed(0)
    return hade.create_model(tiny_model_config).eval()


def test_each_clip_is_decoded_once_and_encoding_is_batch_independent(split, model, monkeypatch):
    calls = []
    real = evaluate_mod.load_audio
    monkeypatch.setattr(evaluate_mod, "load_audio", lambda path, sr: calls.append(path) or real(path, sr))
    a = encode_split(model, split, 1.0, batch_size=3, progress=False)
    assert sorted(calls) == sorted(c.audio_path for c in split.clips)
    b = encode_split(model, split, 1.0, batch_size=64, progress=False)
    assert a.clip_ids == [c.clip_id for c in split.clips] == b.clip_ids
    for key in a.audio:
        torch.testing.assert_close(a.audio[key], b.audio[key], rtol=1e-4, atol=1e-5)


def test_an_undecodable_clip_is_dropped_with_its_captions_and_reported(split, model, tmp_path):
    bad = split.clips[1]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    clips = list(split.clips)
    clips[1] = type(bad)(**{**bad.__dict__, "audio_path": broken})
    damaged = type(split)(name=split.name, clips=clips, problems=[])
    metrics = evaluate(model, damaged, 1.0, progress=False)
    assert metrics.num_audios == len(clips) - 1
    assert metrics.num_texts == sum(len(c.captions) for c in clips) - len(bad.captions)
    assert any(str(broken) in p.source and repr(bad.clip_id) in p.reason for p in metrics.skipped)
    assert metrics.to_dict()["skipped"] == [{"source": p.source, "reason": p.reason} for p in metrics.skipped]
    nothing = type(split)(name=split.name, clips=[clips[1]], problems=[])
    with pytest.raises(InputError, match="no clip could be decoded"):
        encode_split(model, nothing, 1.0, progress=False)


def test_evaluate_run_adds_per_query_results_that_reproduce_the_metrics(split, model):
    from hade.eval.evaluate import evaluate_run
    from hade.eval.per_query import a2t_values, point_estimate, t2a_values

    run = evaluate_run(model, split, 1.0, progress=False)
    assert run.metrics == evaluate(model, split, 1.0, progress=False)
    pq = run.per_query
    assert pq.clip_ids == [c.clip_id for c in split.clips] and pq.split == split.name
    assert pq.file_names == [c.audio_path.name for c in split.clips]
    assert run.captions == [t for c in split.clips for t in c.captions]
    for direction, qv in (("t2a", t2a_values(pq)), ("a2t", a2t_values(pq))):
        for name in ("R@1", "R@5", "R@10", "mAP@10", "medR", "meanR"):
            assert point_estimate(qv, name) == run.metrics.direction(direction)[name], (direction, name)


def test_evaluate_run_is_the_pipeline_demo_and_ablate_share(split, model):
    """encode -> score -> metrics once: the run carries the [T, A] scores it measured and what it encoded."""
    from hade.eval.evaluate import evaluate_run
    from hade.eval.metrics import retrieval_metrics

    run = evaluate_run(model, split, 1.0, batch_size=7, progress=False)
    num_texts = sum(len(c.captions) for c in split.clips)
    assert run.scores.shape == (num_texts, len(split.clips)) and run.scores.dtype == torch.float32
    assert run.encoded.clip_ids == [c.clip_id for c in split.clips] and run.encoded.captions == run.captions
    expected = retrieval_metrics(run.scores.numpy(), run.encoded.text_clip)
    assert (run.metrics.t2a, run.metrics.a2t, run.metrics.tie_rule) == (expected.t2a, expected.a2t, expected.tie_rule)
    assert run.metrics.chance.tie_rule != expected.tie_rule  # the chance level names its random ranking
    assert run.score_seconds >= 0.0
