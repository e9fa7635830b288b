"""`merge_indexes` into a new index, or (replace=True) over an existing one, staged and swapped under its lock."""
from __future__ import annotations

import pytest
from hade.errors import InputError
from hade.index import Index, merge_indexes
from hade.index.store import write_lock


def test_a_merge_replaces_an_existing_index_only_when_asked(dp_ckpt, synth_dir, dp_index, tmp_path):
    from hade.index import build_index

    parts = [tmp_path / f"part{i}" for i in range(2)]
    for i, part in enumerate(parts):
        build_index(synth_dir, part, dp_ckpt, shard=f"{i}/2", batch_size=8, progress=False)
    out = tmp_path / "merged"
    first = merge_indexes(out, parts[:1], progress=False)
    assert 0 < first.windows < 24
    with pytest.raises(InputError, match="exists and is not empty"):
        merge_indexes(out, parts, progress=False)
    with write_lock(out), pytest.raises(InputError, match="another `hade index` is writing"):
        merge_indexes(out, parts, progress=False, replace=True)  # the swap waits for no writer
    summary = merge_indexes(out, parts, progress=False, replace=True)
    assert summary.windows == 24 and summary.out == str(out) and summary.parts == len(parts)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left
    with Index.open(out) as merged, Index.open(dp_index[0]) as single:
        assert merged.info().shard is None
        assert merged.search("a dog barks", k=5) == single.search("a dog barks", k=5)
