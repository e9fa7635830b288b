"""The one JSON clean-up (hade.utils.jsonable) and the one token padding rule (hade.utils.padding)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from hade.utils.jsonable import jsonable
from hade.utils.padding import pad_dim1, pad_to_longest


@dataclass
class _Inner:
    values: np.ndarray
    note: float


def test_jsonable_makes_numpy_paths_dataclasses_and_nan_dumpable():
    value = {"a": np.arange(3, dtype=np.int64), 1: np.float32(0.5), "nan": float("nan"), "inf": np.float64(math.inf),
             "path": Path("x/y.wav"), "nested": [(_Inner(np.array([[1.0, np.nan]]), -math.inf),)]}
    out = jsonable(value)
    assert out == {"a": [0, 1, 2], "1": 0.5, "nan": None, "inf": None, "path": "x/y.wav",
                   "nested": [[{"values": [[1.0, None]], "note": None}]]}
    assert isinstance(out["1"], float) and json.loads(json.dumps(out, allow_nan=False)) == out
    assert jsonable(_Inner) is _Inner  # a class is not an instance


def test_explanation_to_dict_uses_it():
    from hade.explain import Explanation

    e = Explanation(text="a dog", score=float("nan"), clip_seconds=1.0, audio_seconds=np.float32(2.0),
                    confidence=np.array([0.25, 0.75]))
    d = e.to_dict()
    assert d["score"] is None and d["confidence"] == [0.25, 0.75] and d["audio_seconds"] == 2.0
    json.dumps(d, allow_nan=False)


def test_pad_dim1_pads_tokens_with_zeros_and_masks_with_false():
    t = torch.ones(2, 3, 4)
    assert pad_dim1(t, 3) is t
    p = pad_dim1(t, 5)
    assert p.shape == (2, 5, 4) and p[:, :3].eq(1).all() and p[:, 3:].eq(0).all()
    m = pad_dim1(torch.ones(2, 3, dtype=torch.bool), 4)
    assert m.dtype == torch.bool and m.tolist() == [[True, True, True, False]] * 2
    v = torch.ones(2)
    assert pad_dim1(v, 7) is v  # rank 1: nothing to pad
    with pytest.raises(ValueError, match="cannot pad length 3 down to 2"):
        pad_dim1(t, 2)


def test_pad_to_longest_matches_cat_reprs():
    from hade.models.heads.reprs import cat_reprs

    parts = [{"tok": torch.randn(2, n, 3), "mask": torch.ones(2, n, dtype=torch.bool), "vec": torch.randn(2, 3)}
             for n in (2, 5, 4)]
    joined = cat_reprs(parts)
    for key in ("tok", "mask", "vec"):
        assert torch.equal(torch.cat(pad_to_longest([p[key] for p in parts]), 0), joined[key])
    assert pad_to_longest([]) == []
