"""Fixtures for the search engine tests: tiny checkpoints, a SynthCaps folder, a built index.

The tiny models run single-threaded here: on a shared 2-core machine, 2 intra-op threads made each
encoder call up to ~70x slower (threads spin-waiting for a busy core).
"""
from __future__ import annotations

import contextlib
import shutil

import numpy as np
import pytest
import torch


@contextlib.contextmanager
def one_thread():
    import faiss

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])


@pytest.fixture(scope="session")
def single_thread():
    """The `one_thread()` context manager, for fixtures of wider scope than the autouse one."""
    return one_thread


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def make_ckpt(tiny_model_config, path, head="dp", seed=0):
    import dataclasses

    import hade
    from hade.checkpoint import save_model

    torch.manual_seed(seed)
    cfg = dataclasses.replace(tiny_model_config, head=head, text_config=None)
    with one_thread():
        save_model(hade.create_model(cfg), path)
    return path


@pytest.fixture(scope="session")
def ckpt_factory(tiny_model_config):
    """make(path, head="dp", seed=0) -> a saved tiny checkpoint."""
    return lambda path, head="dp", seed=0: make_ckpt(tiny_model_config, path, head, seed)


@pytest.fixture(scope="session")
def dp_ckpt(tiny_model_config, tmp_path_factory):
    return make_ckpt(tiny_model_config, tmp_path_factory.mktemp("ckpt") / "dp")


@pytest.fixture(scope="session")
def other_ckpt(tiny_model_config, tmp_path_factory):
    """Same architecture as dp_ckpt, other weights (another fingerprint)."""
    return make_ckpt(tiny_model_config, tmp_path_factory.mktemp("ckpt") / "dp-other", seed=1)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """24 one-second SynthCaps clips at 8 kHz (do not modify: copy with `fresh_data`)."""
    from hade.data.synthcaps import generate

    out = tmp_path_factory.mktemp("synth") / "data"
    generate(out, clips=24, sample_rate=8000, duration=1.0, progress=False)
    return out


@pytest.fixture
def fresh_data(synth_dir, tmp_path):
    """A private copy of the SynthCaps folder (mtimes kept)."""
    dst = tmp_path / "data"
    shutil.copytree(synth_dir, dst)
    return dst


@pytest.fixture(scope="session")
def dp_index(dp_ckpt, synth_dir, tmp_path_factory):
    """(index dir, BuildReport) of the SynthCaps folder with the DP checkpoint (read-only)."""
    from hade.index import build_index

    out = tmp_path_factory.mktemp("idx") / "dp.idx"
    with one_thread():
        stats = build_index(synth_dir, out, dp_ckpt, batch_size=8, progress=False)
    return out, stats


@pytest.fixture
def encode_counter(monkeypatch):
    """Counts RetrievalModel.encode_audio calls and windows: {'calls': n, 'windows': m}."""
    from hade.models.retrieval import RetrievalModel

    counts = {"calls": 0, "windows": 0}
    original = RetrievalModel.encode_audio

    def counting(self, waveform, aux_captions=None):
        counts["calls"] += 1
        counts["windows"] += int(waveform.shape[0])
        return original(self, waveform, aux_captions)

    monkeypatch.setattr(RetrievalModel, "encode_audio", counting)
    return counts


def _windows_of(index_dir):
    """{(path, start_sample, end_sample): (id, {repr key: float32 array})} of an index."""
    from hade.index import Index

    ix = Index.open(index_dir)
    try:
        arrays = ix.reprs.gather(np.arange(len(ix)))
        out = {}
        for p, wid in enumerate(ix.table["id"]):
            w = ix.get(int(wid))
            key = (w.path, int(ix.table["start_sample"][p]), int(ix.table["end_sample"][p]))
            out[key] = (int(wid), {k: v[p].astype(np.float32) for k, v in arrays.items()})
        return out
    finally:
        ix.close()


@pytest.fixture(scope="session")
def windows_of():
    """windows_of(index_dir) -> {(path, start_sample, end_sample): (id, arrays)} to compare indexes."""
    return _windows_of


@pytest.fixture(scope="session")
def tha_ckpt(tiny_model_config, tmp_path_factory, single_thread):
    """A tiny tha+dcr checkpoint whose level-0 audio tokens are [64, 64] (4 096 values: a token array)."""
    import dataclasses

    import hade
    from hade.checkpoint import save_model

    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_model_config, head="tha+dcr", text_config=None, embed_dim=64)
    path = tmp_path_factory.mktemp("ckpt") / "tha64"
    with single_thread():
        save_model(hade.create_model(cfg), path)
    return path
