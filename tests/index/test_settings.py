"""`IndexSettings`: what a build is asked for, checked once, with one error naming the field."""
from __future__ import annotations

import inspect

import pytest
from hade.errors import InputError
from hade.index import build_index
from hade.index.settings import IndexSettings


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "batch_size must be a whole number >= 1, got 0"),
    ("window", -1.0, "window must be a finite number > 0"),
    ("hop", "fast", "hop must be a finite number > 0"),
    ("ann_threshold", 2.5, "ann_threshold must be a whole number >= 1"),
    ("ann_memory_budget", 0, "ann_memory_budget=0: expected a positive number of bytes"),
    ("token_codec_min_tokens", -1, "token_codec_min_tokens=-1: expected a number of tokens >= 0"),
    ("storage_dtype", "bf16", r"storage_dtype: expected one of \['float16', 'float32'\]"),
    ("compute", "int8", r"compute: expected one of \['fp32', 'bf16', 'fp16'\]"),
    ("token_codec", "garbage", "token_codec 'garbage': not a faiss factory"),
    ("shard", "3/2", "--shard 3/2: need 0 <= i < N"),
    ("follow_external_links", "yes", "follow_external_links must be true or false"),
])
def test_a_bad_value_fails_with_one_error_naming_the_field(field, value, message):
    with pytest.raises(InputError, match=message):
        IndexSettings(**{field: value})


def test_unknown_options_are_named_with_the_valid_fields():
    with pytest.raises(InputError, match=r"unknown field\(s\) \['precision', 'windw'\]; valid fields are .*'window'"):
        IndexSettings.of(windw=2.0, precision="float32")
    base = IndexSettings(window=2.0, shard="1/4")
    assert base.shard == (1, 4) and base.parsed_shard == (1, 4)
    changed = IndexSettings.of(base, hop=1.0)
    assert (changed.window, changed.hop, changed.shard) == (2.0, 1.0, (1, 4)) and base.hop is None


def test_build_index_takes_at_most_five_parameters():
    assert len(inspect.signature(build_index).parameters) <= 5


def test_a_settings_record_builds_what_the_keywords_build(dp_ckpt, fresh_data, tmp_path):
    by_record = build_index(fresh_data, tmp_path / "a.idx", dp_ckpt,
                            IndexSettings(window=0.5, hop=0.25, batch_size=8, progress=False))
    by_keywords = build_index(fresh_data, tmp_path / "b.idx", dp_ckpt, window=0.5, hop=0.25, batch_size=8,
                              progress=False)
    assert by_record.windows == by_keywords.windows > 24
    with pytest.raises(InputError, match="the index uses --window 0.5 s"):
        build_index(fresh_data, tmp_path / "a.idx", settings=IndexSettings(window=1.0, progress=False))
