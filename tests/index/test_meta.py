"""The index meta as a typed record: older indexes upgrade through `IndexMeta.from_dict` and still open."""
from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from hade.index import Index, build_index
from hade.index.meta import CodecState, IndexMeta
from hade.index.store import Store

# the meta table of an index written before token codecs, links and ANN budgets (and before the storage
# dtype had its name): what `hade index` wrote in 2026-06
OLD_META = {"schema": 1, "fingerprint": "ab" * 32, "head": "dp", "root": "/data/sounds", "shard": [1, 4],
            "sample_rate": 32000, "window_samples": 320000, "hop_samples": 160000, "precision": "float32",
            "repr_spec": {"embed": {"shape": [512], "dtype": "float32"}}, "pooled_key": "embed",
            "ann_threshold": 50000, "generation": 7}


def test_an_old_meta_dict_upgrades_to_the_record():
    meta = IndexMeta.from_dict({**OLD_META, "some_future_key": 1})
    assert meta.storage_dtype == "float32" and meta.shard == (1, 4) and meta.one_shard == (1, 4)
    assert meta.token_codec is None and meta.follow_external_links is False and meta.ann_memory_budget is None
    assert meta.created and meta.reprs_known and meta.window_seconds == 10.0 and meta.hop_seconds == 5.0
    disk = meta.to_dict()
    assert disk["precision"] == "float32" and "storage_dtype" not in disk and disk["shard"] == [1, 4]
    assert IndexMeta.from_dict(disk) == meta


def test_codec_state_and_merged_shards_round_trip():
    meta = IndexMeta(shard=((0, 3), (2, 3)), token_codec=CodecState("PQ16", ("tha_audio_0",), "abc", 1000))
    disk = json.loads(json.dumps(meta.to_dict()))
    assert disk["shard"] == [[0, 3], [2, 3]] and disk["token_codec"] == {
        "factory": "PQ16", "keys": ["tha_audio_0"], "current": "abc", "min_tokens": 1000}
    back = IndexMeta.from_dict(disk)
    assert back == meta and back.one_shard is None
    assert not IndexMeta.from_dict({}).created  # an index interrupted before anything was stored


def test_update_meta_names_an_unknown_field(tmp_path):
    store = Store(tmp_path / "idx", create=True)
    try:
        with pytest.raises(TypeError, match="precision"):
            store.update_meta(precision="float16")  # the on-disk key is not a field: storage_dtype is
    finally:
        store.close()


def test_an_index_written_before_token_codecs_opens_and_updates(dp_index, synth_dir, tmp_path):
    old = tmp_path / "old.idx"
    shutil.copytree(dp_index[0], old)
    with sqlite3.connect(old / "index.sqlite") as db:  # the meta table as hade wrote it before these keys
        db.execute("DELETE FROM meta WHERE key IN ('token_codec', 'follow_external_links', 'ann_memory_budget')")
    store = Store(old)
    try:
        assert store.meta().token_codec is None and store.meta().storage_dtype == "float16"
    finally:
        store.close()
    with Index.open(dp_index[0]) as new, Index.open(old) as ix:
        assert ix.info().token_codec.to_dict() == {"factory": "none", "keys": None, "current": None}
        assert ix.search("a dog barks", k=5) == new.search("a dog barks", k=5)
    stats = build_index(synth_dir, old, progress=False)
    assert stats.encoded_files == 0 and stats.unchanged_files == 24 and stats.repaired == []
