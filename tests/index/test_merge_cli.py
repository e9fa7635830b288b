"""Shards + merge equal a single build; the `hade index` / `hade search` commands."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hade.errors import InputError
from hade.index import Index, build_index, merge_indexes
from hade.cli import main


def test_shards_and_merge_equal_a_single_build(dp_ckpt, other_ckpt, dp_index, synth_dir, tmp_path, encode_counter,
                                               windows_of):
    parts = []
    for i in range(3):
        parts.append(tmp_path / f"part{i}")
        stats = build_index(synth_dir, parts[-1], dp_ckpt, shard=f"{i}/3", progress=False)
        assert 0 < stats.windows < 24
    assert encode_counter["windows"] == 24  # every file in exactly one shard
    summary = merge_indexes(tmp_path / "merged", parts, progress=False)
    assert summary.windows == 24 and summary.files == 24 and summary.ann.kind == "flat"
    single, merged = windows_of(dp_index[0]), windows_of(tmp_path / "merged")
    assert merged.keys() == single.keys()
    for key, (wid, arrays) in single.items():
        assert merged[key][0] == wid  # same ids: (path, start) order
        np.testing.assert_array_equal(merged[key][1]["embed"], arrays["embed"])
    a, b = Index.open(dp_index[0]), Index.open(tmp_path / "merged")
    assert a.search("a dog barks", k=5) == b.search("a dog barks", k=5)
    assert b.info().shard is None and b.info().fingerprint == a.info().fingerprint
    a.close(), b.close()
    encode_counter.update(calls=0, windows=0)
    again = build_index(synth_dir, tmp_path / "merged", progress=False)  # the merged index updates like any other
    assert again.unchanged_files == 24 and encode_counter["windows"] == 0

    build_index(synth_dir, tmp_path / "other", other_ckpt, shard="0/3", progress=False)
    with pytest.raises(InputError, match="fingerprint"):
        merge_indexes(tmp_path / "bad", [parts[1], tmp_path / "other"], progress=False)
    with pytest.raises(InputError, match="not empty"):
        merge_indexes(tmp_path / "merged", parts, progress=False)
    with pytest.raises(InputError, match="shard"):
        build_index(synth_dir, parts[0], shard="1/3", progress=False)


def test_cli_index_search_and_merge(dp_ckpt, fresh_data, tmp_path, capsys):
    (fresh_data / "broken.wav").write_bytes(b"not audio at all")
    out = tmp_path / "idx"
    assert main(["index", str(fresh_data), "--ckpt", str(dp_ckpt), "--out", str(out), "--quiet"]) == 0
    cap = capsys.readouterr()
    assert "24 files, 24 windows (flat ANN)" in cap.out and "skipped broken.wav:" in cap.err
    assert main(["search", str(out), "a dog barks while rain falls", "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert set(hits[0]) >= {"id", "path", "start", "end", "score", "file"}
    assert main(["search", str(out), "a bell", "-k", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["rank", "file", "window", "score"] and len(table) == 3
    assert main(["search", str(out), "--audio", str(fresh_data / hits[0]["path"]), "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["path"] == hits[0]["path"]
    assert main(["search", str(out), "--audio", str(fresh_data / hits[0]["path"]), "-k", "1", "--json",
                 "--compute", "bf16"]) == 0  # the query is encoded under bf16 autocast and still finds itself
    assert json.loads(capsys.readouterr().out)[0]["path"] == hits[0]["path"]
    assert main(["search", str(out), "x", "--compute", "fp16"]) == 2  # fp16 needs CUDA
    assert "compute: fp16 needs a CUDA device" in capsys.readouterr().err
    assert main(["search", str(out)]) == 2
    assert "give one of a text query, --audio FILE or --like PATH" in capsys.readouterr().err
    # more like an indexed file: by its path as indexed, or its path inside the folder
    assert main(["search", str(out), "--like", hits[0]["path"], "-k", "3", "--json"]) == 0
    like = json.loads(capsys.readouterr().out)
    assert len(like) == 3 and hits[0]["path"] not in {h["path"] for h in like}
    assert main(["search", str(out), "--like", str(fresh_data / hits[0]["path"]), "--at", "0.3", "-k", "3",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == like  # one window per file here: the same query
    assert main(["search", str(out), "--like", "nowhere.wav"]) == 2
    assert "nowhere.wav: not a file of the index" in capsys.readouterr().err
    assert main(["search", str(out), "dog", "--at", "1"]) == 2
    assert "--at and --same-file go with --like" in capsys.readouterr().err
    assert main(["index", str(fresh_data), "--out", str(out), "--window", "1.5"]) == 2
    assert "--rebuild" in capsys.readouterr().err
    for i in range(2):
        assert main(["index", str(fresh_data), "--ckpt", str(dp_ckpt), "--out", str(tmp_path / f"p{i}"),
                     "--shard", f"{i}/2", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["index", "merge", str(tmp_path / "m"), str(tmp_path / "p0"), str(tmp_path / "p1"), "--quiet"]) == 0
    assert "24 windows from 2 parts" in capsys.readouterr().out
    assert main(["index", "merge", str(tmp_path / "mj"), str(tmp_path / "p0"), str(tmp_path / "p1"), "--quiet",
                 "--json"]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert (merged["files"], merged["windows"], merged["parts"], merged["ann"]["kind"]) == (24, 24, 2, "flat")
    assert merged["out"] == str(tmp_path / "mj")
    assert main(["search", str(tmp_path / "nowhere"), "x"]) == 2
