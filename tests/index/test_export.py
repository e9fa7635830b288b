"""Vectors out of an index and into one: `embed_audio` equals what `hade index` stores, `Index.vectors()`,
and `hade export` to Parquet (searched with DuckDB: the same top-10 as `Index.search`) and .npy + CSV."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

import hade
from hade.cli import main
from hade.errors import InputError
from hade.index import Index, IndexVectors, build_index, export_index

QUERIES = ["a dog barks while rain falls", "a bell rings twice", "birds chirp and then a car passes",
           "an engine idles", "footsteps on gravel"]
FLOAT16_STEP = 2.0 ** -11  # float16 rounding of a value in [-1, 1] moves it by at most this


@pytest.fixture(scope="module")
def long_folder(tmp_path_factory):
    """Files longer than a window (several windows, one at another rate) and shorter (zero-padded)."""
    root = tmp_path_factory.mktemp("mixed") / "data"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sf.write(root / "long.wav", (0.1 * rng.standard_normal(8000 * 5)).astype(np.float32), 8000)
    sf.write(root / "sub" / "resampled.flac", (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32), 16000)
    sf.write(root / "short.wav", (0.1 * rng.standard_normal(3000)).astype(np.float32), 8000)
    return root


@pytest.fixture(scope="module")
def f32_index(dp_ckpt, long_folder, tmp_path_factory, single_thread):
    out = tmp_path_factory.mktemp("idx32") / "f32.idx"
    with single_thread():
        build_index(long_folder, out, dp_ckpt, storage_dtype="float32", batch_size=4, progress=False)
    return out


def _by_window(paths, starts, vectors) -> dict[tuple[str, float], np.ndarray]:
    return {(p, round(float(s), 6)): v for p, s, v in zip(paths, starts, vectors)}


def test_embed_audio_per_window_equals_what_the_index_stores(f32_index, long_folder, dp_ckpt):
    model = hade.load(dp_ckpt)
    files = sorted(p for p in long_folder.rglob("*") if p.is_file())
    win = model.embed_audio(files, per_window=True, batch_size=5)
    rels = [files[i].relative_to(long_folder).as_posix() for i in win.item]
    mine = _by_window(rels, win.start, win.vectors)
    with Index.open(f32_index) as ix:
        stored = ix.vectors()
        assert ix.info().storage_dtype == "float32"
    theirs = _by_window(stored.paths, stored.start, stored.vectors)
    assert set(mine) == set(theirs) and len(mine) == len(stored) > len(files)  # long files: several windows
    for key, vec in theirs.items():
        np.testing.assert_allclose(mine[key], vec, atol=1e-5, err_msg=str(key))
    ends = _by_window(rels, win.start, win.end)
    assert ends == pytest.approx(_by_window(stored.paths, stored.start, stored.end))
    pooled = model.embed_audio(files)  # one vector per file: the query vector of `hade search --audio FILE`
    with Index.open(f32_index) as ix:
        for f, vec in zip(files, pooled):
            np.testing.assert_allclose(ix.scores(f), stored.vectors @ vec, atol=1e-5)


def test_embed_audio_equals_a_float16_index_within_its_storage_rounding(dp_index, synth_dir, dp_ckpt):
    """The default storage is float16: the stored vectors are embed_audio's rounded to float16."""
    model = hade.load(dp_ckpt)
    with Index.open(dp_index[0]) as ix:
        stored = ix.vectors()
        assert ix.info().storage_dtype == "float16"
    win = model.embed_audio([synth_dir / p for p in stored.paths], per_window=True)
    assert win.item.tolist() == list(range(len(stored)))  # 1 s clips: one padded window each
    np.testing.assert_allclose(win.vectors, stored.vectors, rtol=0, atol=FLOAT16_STEP)
    assert not np.array_equal(win.vectors, stored.vectors)  # the stored ones are rounded


def test_index_vectors_is_a_typed_record_of_the_pooled_key(dp_index):
    with Index.open(dp_index[0]) as ix:
        vecs = ix.vectors()
        assert isinstance(vecs, IndexVectors) and vecs.key == ix.pooled_key == "embed"
        assert vecs.vectors.dtype == np.float32 and vecs.vectors.shape == (len(ix), 32)
        np.testing.assert_array_equal(vecs.ids, ix.table["id"])
        np.testing.assert_array_equal(vecs.vectors, ix.reprs.gather(np.arange(len(ix)), keys=["embed"])["embed"])
        for i in (0, len(ix) - 1):
            w = ix.get(int(vecs.ids[i]))
            assert (vecs.paths[i], vecs.start[i], vecs.end[i]) == (w.path, w.start, w.end)


def test_an_index_without_pooled_vectors_cannot_export(ckpt_factory, synth_dir, tmp_path):
    out = tmp_path / "tha.idx"
    build_index(synth_dir, out, ckpt_factory(tmp_path / "tha-ckpt", head="tha"), progress=False, token_codec="none")
    with Index.open(out) as ix:
        with pytest.raises(InputError, match=r"head 'tha' stores no pooled window vectors.*\bdp\b"):
            ix.vectors()


def test_parquet_export_searched_with_duckdb_finds_the_same_top10(dp_index, dp_ckpt, tmp_path):
    import duckdb  # the dev extra declares it
    out = tmp_path / "windows.parquet"
    summary = export_index(dp_index[0], out)
    assert summary.windows == 24 and summary.dim == 32 and summary.key == "embed" and summary.files == (out,)
    model = hade.load(dp_ckpt)
    con = duckdb.connect()
    columns = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{out}')").fetchall()
    assert [(c[0], c[1]) for c in columns] == [("id", "BIGINT"), ("path", "VARCHAR"), ("start", "DOUBLE"),
                                               ("end", "DOUBLE"), ("vector", "FLOAT[]")]
    with Index.open(dp_index[0]) as ix:
        for q in QUERIES:
            qvec = model.embed_text(q)[0].tolist()
            rows = con.execute(
                f"SELECT id, path, list_cosine_similarity(vector, ?::FLOAT[]) AS score "
                f"FROM read_parquet('{out}') ORDER BY score DESC, id LIMIT 10", [qvec]).fetchall()
            hits = ix.search(q, k=10)
            assert [r[0] for r in rows] == [h.id for h in hits], q
            assert [r[1] for r in rows] == [h.path for h in hits]
            np.testing.assert_allclose([r[2] for r in rows], [h.score for h in hits], atol=1e-5)
    meta = json.loads(con.execute(f"SELECT value FROM parquet_kv_metadata('{out}') WHERE key = 'hade'")
                      .fetchone()[0])
    assert meta["head"] == "dp" and meta["storage_dtype"] == "float16"


def test_hade_export_cli_writes_npy_with_a_csv_beside_it(dp_index, tmp_path, capsys):
    out = tmp_path / "out" / "windows.npy"
    assert main(["export", str(dp_index[0]), "--out", str(out)]) == 0
    assert "wrote 24 window vectors (32 dims" in capsys.readouterr().out
    vectors = np.load(out)
    with open(out.with_suffix(".csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    with Index.open(dp_index[0]) as ix:
        expect = ix.vectors()
    np.testing.assert_array_equal(vectors, expect.vectors)
    assert [r["path"] for r in rows] == expect.paths and [int(r["id"]) for r in rows] == expect.ids.tolist()
    np.testing.assert_allclose([float(r["end"]) for r in rows], expect.end)
    assert main(["export", str(dp_index[0]), "--out", str(tmp_path / "w.txt")]) == 2
    assert "name a .parquet or .npy file" in capsys.readouterr().err
    assert main(["export", str(dp_index[0]), "--out", str(tmp_path / "w.bin"), "--format", "parquet"]) == 0
    assert (tmp_path / "w.bin").read_bytes()[:4] == b"PAR1"
    capsys.readouterr()
    assert main(["export", str(dp_index[0]), "--out", str(tmp_path / "j.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"windows": 24, "dim": 32, "key": "embed",
                                                   "files": [str(tmp_path / "j.npy"), str(tmp_path / "j.csv")]}
