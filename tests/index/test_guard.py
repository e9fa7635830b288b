"""Search's `guard`: every model use inside it, nothing else; audio queries encoded in bounded batches."""
from __future__ import annotations

import contextlib
import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hade.errors import InputError
from hade.index import Index, build_index
from hade.index.search import AUDIO_QUERY_BATCH
from hade.index.windows import window_bounds

search_mod = importlib.import_module("hade.index.search")  # `hade.index.search` the attribute is a function


class Guard:
    """A guard that records how often it was entered and whether it is held now."""

    def __init__(self) -> None:
        self.inside = False
        self.entries = 0

    @contextlib.contextmanager
    def __call__(self):
        assert not self.inside, "guard entered twice"
        self.inside = True
        self.entries += 1
        try:
            yield
        finally:
            self.inside = False


def instrument(ix: Index, guard: Guard, monkeypatch) -> dict[str, int]:
    """Make every model entry point assert the guard is held, and gathers / ANN lookups that it is not."""
    calls = {"encode_audio": 0, "encode_text": 0, "score": 0, "pooled_text": 0, "pooled_audio": 0,
             "gather": 0, "ann": 0}

    def inside(name, fn):
        def wrapped(*a, **k):
            assert guard.inside, f"{name} ran outside the guard"
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    def outside(name, fn):
        def wrapped(*a, **k):
            assert not guard.inside, f"{name} ran inside the guard"
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    for name in ("encode_audio", "encode_text", "score"):
        monkeypatch.setattr(ix.model, name, inside(name, getattr(ix.model, name)))
    head = ix.model.head
    for name in ("pooled_text", "pooled_audio"):
        monkeypatch.setattr(head, name, inside(name, getattr(head, name)))
    monkeypatch.setattr(ix.reprs, "gather", outside("gather", ix.reprs.gather))
    monkeypatch.setattr(search_mod, "ann_search", outside("ann", search_mod.ann_search))
    return calls


def long_wave(ix: Index, windows: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    n = ix.meta.window_samples + (windows - 1) * ix.meta.hop_samples + 123  # a tail window too
    return (0.1 * rng.standard_normal(n)).astype(np.float32)


def test_every_model_use_runs_inside_the_guard(dp_index, monkeypatch):
    with Index.open(dp_index[0]) as ix:
        expected_text = ix.search("a dog barks", k=5)
        wave = long_wave(ix, 20)
        expected_audio = ix.search(wave, k=5)
        guard = Guard()
        calls = instrument(ix, guard, monkeypatch)
        assert ix.search("a dog barks", k=5, guard=guard) == expected_text
        assert calls["encode_text"] == 1 and calls["score"] >= 1 and calls["gather"] >= 1 and calls["ann"] == 1
        assert calls["pooled_text"] == 1 and calls["pooled_audio"] == 0  # the query side only, no window borrowed
        entries = guard.entries
        hits = ix.search(wave, k=5, guard=guard)
        n = len(window_bounds(len(wave), ix.meta.window_samples, ix.meta.hop_samples))
        assert calls["encode_audio"] == math.ceil(n / AUDIO_QUERY_BATCH) and n > 2 * AUDIO_QUERY_BATCH
        assert guard.entries - entries == calls["encode_audio"] + 1  # + one scoring block
        assert [h.id for h in hits] == [h.id for h in expected_audio]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in expected_audio], rtol=1e-5)
        before = calls["encode_audio"]
        three = ix.search(wave, k=5, guard=guard, audio_batch=3)  # a server's --audio-batch: same hits
        assert calls["encode_audio"] - before == math.ceil(n / 3) and [h.id for h in three] == [h.id for h in hits]
        np.testing.assert_allclose([h.score for h in three], [h.score for h in hits], rtol=1e-5)
        with pytest.raises(InputError, match="audio_batch"):
            ix.search(wave, k=5, audio_batch=0)
        ix.scores("a bell", guard=guard)
        assert not guard.inside


def unbatched_vector(ix: Index, wave: np.ndarray) -> torch.Tensor:
    """The query vector as before batching: every window encoded in one call, mean of their vectors."""
    win, hop = ix.meta.window_samples, ix.meta.hop_samples
    bounds = window_bounds(len(wave), win, hop)
    batch = np.zeros((len(bounds), win), dtype=np.float32)
    for i, (s, e) in enumerate(bounds):
        batch[i, :e - s] = wave[s:e]
    with torch.inference_mode():
        vecs = ix.query_encoder.window_vectors(ix.model.encode_audio(torch.from_numpy(batch)))
    return F.normalize(vecs.mean(0, keepdim=True), dim=-1)


@pytest.fixture(scope="module")
def tha_index(ckpt_factory, synth_dir, tmp_path_factory, single_thread):
    """A pure THA index: audio queries use the token vector (no pooled embedding)."""
    root = tmp_path_factory.mktemp("guard-tha")
    ckpt = ckpt_factory(root / "ckpt", head="tha")
    with single_thread():
        build_index(synth_dir, root / "tha.idx", ckpt, batch_size=8, progress=False)
    return root / "tha.idx"


@pytest.mark.parametrize("which", ["dp", "tha"])
def test_batched_audio_query_equals_the_unbatched_vector(which, dp_index, tha_index):
    with Index.open(dp_index[0] if which == "dp" else tha_index) as ix:
        wave = long_wave(ix, 3 * AUDIO_QUERY_BATCH + 3)
        with torch.inference_mode():
            batched = ix.query_encoder.audio_vector(wave, contextlib.nullcontext)
        torch.testing.assert_close(batched, unbatched_vector(ix, wave), rtol=1e-5, atol=1e-6)
