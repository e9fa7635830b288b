"""SynthCaps output in each layout is read back by the matching reader, split names aliased."""
import pytest

from hade.data.readers import detect_layout, read_split
from hade.data.synthcaps import generate


@pytest.mark.parametrize("layout", ["clotho", "audiocaps", "wavcaps"])
def test_each_layout_reads_back(tmp_path, layout):
    summary = generate(tmp_path, clips=20, seed=3, sample_rate=8000, duration=1.0, layout=layout, progress=False)
    assert detect_layout(tmp_path) == layout
    for split in ("development", "validation", "evaluation"):
        data = read_split(tmp_path, split)
        assert not data.problems
        assert data.clips and all(c.audio_path.is_file() for c in data.clips)
        five = split != "development" or layout != "audiocaps"  # AudioCaps train has one caption per clip
        assert all(len(c.captions) == (5 if five else 1) for c in data.clips)
    total = sum(len(read_split(tmp_path, s).clips) for s in ("train", "val", "test"))
    assert total == summary.clips == 20
