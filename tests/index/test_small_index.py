"""A small index keeps float tokens until it has enough to fit its token codec; fitting is quiet and shows
progress; the bytes a token that README and `hade index --help` state are those of the default codec."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hade.errors import InputError
from hade.index import Index, build_index
from hade.index.compression import TokenCompression
from hade.index.meta import CodecState, IndexMeta
from hade.index.store import Store
from hade.index.tokens import DEFAULT_FACTORY, TokenCodec, code_bytes_for, tokens_to_fit

CODEC = "PQ16"  # the tiny model's [64, 64] level-0 tokens: 16 + 2 bytes a token
MIN_TOKENS = 1000  # 16 windows of 64 tokens: the first run's 10 files stay float, the second run's 24 fit
QUERIES = ("a dog barks", "rain on a roof", "a bell rings twice")


def _meta(index_dir: Path) -> IndexMeta:
    store = Store(index_dir)
    try:
        return store.meta()
    finally:
        store.close()


def _scores(index_dir: Path, query: str) -> dict[tuple[str, float], float]:
    with Index.open(index_dir) as index:
        return {(index.get(w).path, index.get(w).start): s
                for w, s in zip(index.table["id"].tolist(), index.scores(query).tolist())}


def _coded_files(index_dir: Path) -> list[str]:
    return sorted(p.name for p in (index_dir / "arrays").rglob("tha_audio_0*.npy"))


def test_a_small_index_stores_float_tokens_and_fits_once_it_has_grown(tha_ckpt, synth_dir, tmp_path):
    """10 windows (640 tokens) < 1 000: float tokens, searched exactly as an index with --token-codec none;
    adding 14 files (24 windows) fits the codec and compresses the float chunks, and the grown index scores
    as a fresh build of the 24 files (the same codec: fitted on the same windows)."""
    folder, later = tmp_path / "data", tmp_path / "later"
    shutil.copytree(synth_dir, folder)
    wavs = sorted(folder.rglob("*.wav"))
    later.mkdir()
    for wav in wavs[10:]:  # the last 14 in path order, so window ids stay in path order
        wav.rename(later / wav.relative_to(folder).as_posix().replace("/", "__"))
    small = tmp_path / "small.idx"
    stats = build_index(folder, small, tha_ckpt, progress=False, token_codec=CODEC, token_codec_min_tokens=MIN_TOKENS)
    assert any("not fitted yet (it needs 1000 tokens of tha_audio_0 to train well, about 16 windows; the index "
               "has fewer)" in n for n in stats.notes)
    assert _meta(small).token_codec == CodecState(CODEC, ("tha_audio_0",), None, MIN_TOKENS)
    assert _coded_files(small) == ["tha_audio_0.npy"] and not list(small.glob("codecs/*"))
    float_small = tmp_path / "float-small.idx"
    build_index(folder, float_small, tha_ckpt, progress=False, token_codec="none")
    for query in QUERIES:
        assert _scores(small, query) == _scores(float_small, query)  # float tokens: the same scores

    for moved in sorted(later.iterdir()):
        moved.rename(folder / moved.name.replace("__", "/"))
    stats = build_index(folder, small, progress=False)  # min_tokens is kept in the index
    assert stats.encoded_files == 14 and len(wavs) == 24
    assert stats.notes == []  # its 14 new windows are too few, but with the 10 stored ones the codec fits
    tc = _meta(small).token_codec
    assert tc.current is not None and tc.min_tokens == MIN_TOKENS
    assert _coded_files(small) == ["tha_audio_0.codes.npy"]  # every float chunk converted
    fresh = tmp_path / "fresh.idx"
    build_index(folder, fresh, tha_ckpt, progress=False, token_codec=CODEC, token_codec_min_tokens=MIN_TOKENS)
    assert _meta(fresh).token_codec.current == tc.current
    float_all = tmp_path / "float-all.idx"
    build_index(folder, float_all, tha_ckpt, progress=False, token_codec="none")
    for query in QUERIES:
        grown, exact = _scores(small, query), _scores(float_all, query)
        assert grown == pytest.approx(_scores(fresh, query), abs=1e-6)
        assert grown.keys() == exact.keys()
        diff = np.abs([grown[k] - exact[k] for k in exact])
        assert 0 < diff.max() < 0.03  # compressed now: lossy, within the bound of test_compressed_index
    with Index.open(small) as a, Index.open(float_all) as b:
        top_a = {(h.path, h.start) for h in a.search(QUERIES[0], k=5)}
        assert len(top_a & {(h.path, h.start) for h in b.search(QUERIES[0], k=5)}) >= 4


def test_the_default_threshold_is_what_the_factory_needs(tha_ckpt, synth_dir, tmp_path):
    """Without token_codec_min_tokens, 24 windows of 64 tokens are far below PQ16's 39 x 256 tokens."""
    assert tokens_to_fit(CODEC, 64) == tokens_to_fit(DEFAULT_FACTORY, 256) == 39 * 256
    assert tokens_to_fit("PQ16x4", 64) == 39 * 16 and tokens_to_fit("IVF1024,PQ32", 256) == 39 * 1024
    assert tokens_to_fit("PQ48", 64) == 0  # 48 does not divide 64: the fit is tried and says why it fails
    stats = build_index(synth_dir, tmp_path / "idx", tha_ckpt, progress=False, token_codec=CODEC)
    assert any("it needs 9984 tokens of tha_audio_0 to train well, about 156 windows" in n for n in stats.notes)
    assert _coded_files(tmp_path / "idx") == ["tha_audio_0.npy"]
    comp = TokenCompression(Store(tmp_path / "idx"), _meta(tmp_path / "idx"))
    try:
        spec = comp.store.meta().repr_spec
        assert comp.windows_needed(spec) == 156 and comp.fit_windows(spec) == 512
        comp.min_tokens = 0  # the behaviour before deferral: fit on whatever there is
        assert comp.windows_needed(spec) == 0
    finally:
        comp.store.close()
    with pytest.raises(InputError, match="token_codec_min_tokens=-1: expected a number of tokens >= 0"):
        build_index(synth_dir, tmp_path / "x", tha_ckpt, progress=False, token_codec_min_tokens=-1)


def test_fitting_prints_no_faiss_warning_and_shows_progress(tha_ckpt, synth_dir, tmp_path, capfd):
    """The default codec (OPQ8,IVF256,PQ8 at 64 dims) fitted on 1 536 tokens (fewer than faiss's 39 a
    centroid) used to print hundreds of ``WARNING clustering`` lines to the C stderr; now nothing but the
    progress bar of the codecs being fitted."""
    build_index(synth_dir, tmp_path / "idx", tha_ckpt, progress=True, token_codec_min_tokens=0)
    err = capfd.readouterr().err
    assert "WARNING" not in err and "clustering" not in err
    assert "fit token codecs" in err and "tha_audio_0 64d" in err and "0/1" in err  # one token key, one codec
    assert _meta(tmp_path / "idx").token_codec.current is not None


def test_readme_and_help_state_the_default_codecs_bytes_a_token(capsys):
    """Each "N bytes a token at D dims" in README and `hade index --help` is what the default codec gives."""
    from hade.cli import main

    with pytest.raises(SystemExit):
        main(["index", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    for text in (help_text, readme):
        stated = {int(d): int(b) for b, d in re.findall(r"(\d+) bytes a token at (\d+) dims", text)}
        assert {256, 512} <= stated.keys()
        assert stated == {d: code_bytes_for(d) for d in stated}
    assert code_bytes_for(256) == 35 and code_bytes_for(512) == 67
    rng = np.random.default_rng(0)
    fitted = TokenCodec.fit(rng.standard_normal((300, 64)).astype(np.float32))  # the default at 64 dims
    assert fitted.code_bytes == code_bytes_for(64) == 1 + 8 + 2
