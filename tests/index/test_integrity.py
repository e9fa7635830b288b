"""Damaged index files: clear errors naming the file, `hade index --check`, repair by a plain re-run."""
from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from hade.cli import main
from hade.errors import IndexDamaged
from hade.index import Index, build_index, check_index
from hade.index.integrity import Health, health

QUERIES = ["a dog barks while rain falls", "a bell rings twice", "footsteps on gravel"]


def results(index_dir) -> list[list[tuple[str, float, float, float]]]:
    """(path, start, end, score) of the top 10 for each query: ids may differ after a repair."""
    with Index.open(index_dir) as ix:
        return [[(h.path, h.start, h.end, h.score) for h in ix.search(q, k=10)] for q in QUERIES]


def assert_same_results(a, b) -> None:
    for ha, hb in zip(a, b):
        assert [h[:3] for h in ha] == [h[:3] for h in hb]
        np.testing.assert_allclose([h[3] for h in ha], [h[3] for h in hb], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def reference(dp_index):
    """Search results of the fresh (intact) build."""
    return results(dp_index[0])


@pytest.fixture
def copy_index(dp_index, tmp_path):
    """A private copy of the fresh index (its root stays the read-only SynthCaps folder)."""
    dst = tmp_path / "dp.idx"
    shutil.copytree(dp_index[0], dst)
    return dst


def first_chunk_file(index_dir) -> str:
    return sorted(p.relative_to(index_dir).as_posix() for p in (index_dir / "arrays").glob("c*/embed.npy"))[0]


def ann_name(index_dir) -> str:
    return next(index_dir.glob("ann-*.faiss")).name


def truncate(file, keep: float = 0.5) -> None:
    data = file.read_bytes()
    file.write_bytes(data[:int(len(data) * keep)])


def flip_last_bytes(file) -> None:
    data = bytearray(file.read_bytes())
    for i in range(1, 9):
        data[-i] ^= 0xFF
    file.write_bytes(bytes(data))


def assert_check_names(index_dir, rel, capsys) -> None:
    result = check_index(index_dir)
    assert not result.ok and rel in [p.file for p in result.problems]
    assert result.repair.startswith("hade index ") and f"--out {index_dir}" in result.repair
    capsys.readouterr()
    assert main(["index", "--check", str(index_dir)]) == 1
    out = capsys.readouterr().out
    assert f"{index_dir / rel}" in out and "repair with: hade index" in out


def assert_open_names(index_dir, rel, ckpt: bool = False) -> None:
    with pytest.raises(IndexDamaged) as e:
        Index.open(index_dir)
    assert e.value.file == rel and rel in str(e.value) and "\n" not in str(e.value)
    assert e.value.repair in str(e.value) and e.value.repair.startswith("hade index ")
    assert ("--ckpt" in e.value.repair) == ckpt
    assert health(index_dir).status == "degraded"


def repair_and_compare(index_dir, synth_dir, reference, **kwargs) -> dict:
    stats = build_index(synth_dir, index_dir, progress=False, **kwargs)
    assert stats.repaired, stats
    assert check_index(index_dir).ok
    assert health(index_dir) == Health()
    assert_same_results(results(index_dir), reference)
    return stats


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_chunk_array_is_named_and_repaired_by_a_rerun(damage, copy_index, synth_dir, reference, capsys):
    rel = first_chunk_file(copy_index)
    (copy_index / rel).unlink() if damage == "delete" else truncate(copy_index / rel)
    assert_open_names(copy_index, rel)
    assert_check_names(copy_index, rel, capsys)
    stats = repair_and_compare(copy_index, synth_dir, reference)
    assert 0 < stats.encoded_files < 24  # only the files whose windows lived in that chunk
    assert any(rel in r for r in stats.repaired)


def test_flipped_bytes_in_a_chunk_are_caught_by_checksums(copy_index, synth_dir, reference, capsys):
    rel = first_chunk_file(copy_index)
    size = (copy_index / rel).stat().st_size
    flip_last_bytes(copy_index / rel)
    assert (copy_index / rel).stat().st_size == size
    assert check_index(copy_index, deep=False).ok  # same size: the quick check cannot see it
    assert_check_names(copy_index, rel, capsys)
    assert "sha256" in next(p.problem for p in check_index(copy_index).problems if p.file == rel)
    stats = repair_and_compare(copy_index, synth_dir, reference)
    assert 0 < stats.encoded_files < 24


def test_flipped_bytes_are_caught_by_a_rerun_even_with_the_old_mtime(copy_index, synth_dir, reference):
    import os

    rel = first_chunk_file(copy_index)
    st = (copy_index / rel).stat()
    flip_last_bytes(copy_index / rel)
    os.utime(copy_index / rel, ns=(st.st_atime_ns, st.st_mtime_ns))  # bit rot does not touch the mtime
    repair_and_compare(copy_index, synth_dir, reference)


def test_truncated_database_is_set_aside_and_rebuilt(copy_index, synth_dir, reference, capsys):
    truncate(copy_index / "index.sqlite")
    assert_open_names(copy_index, "index.sqlite")
    assert_check_names(copy_index, "index.sqlite", capsys)
    stats = repair_and_compare(copy_index, synth_dir, reference)  # no --ckpt: the model copy is intact
    assert stats.encoded_files == 24 and (copy_index / "index.sqlite.damaged").is_file()
    assert any("index.sqlite" in r and "from scratch" in r for r in stats.repaired)


def test_garbage_database_is_named(copy_index):
    (copy_index / "index.sqlite").write_bytes(b"not a database at all" * 100)
    assert_open_names(copy_index, "index.sqlite")


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_ann_is_named_and_rebuilt(damage, copy_index, synth_dir, reference, capsys):
    rel = ann_name(copy_index)
    (copy_index / rel).unlink() if damage == "delete" else truncate(copy_index / rel)
    assert_open_names(copy_index, rel)
    assert_check_names(copy_index, rel, capsys)
    assert main(["index", str(synth_dir), "--out", str(copy_index), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"repaired: {rel} was" in out and "rebuilding the ANN" in out and "0 encoded" in out
    assert check_index(copy_index).ok
    assert_same_results(results(copy_index), reference)


def test_damaged_model_copy_needs_ckpt_and_is_recopied(copy_index, synth_dir, dp_ckpt, reference, capsys):
    rel = "model/model.safetensors"
    truncate(copy_index / rel)
    assert_open_names(copy_index, rel, ckpt=True)
    assert_check_names(copy_index, rel, capsys)
    with pytest.raises(IndexDamaged, match="--ckpt"):
        build_index(synth_dir, copy_index, progress=False)
    assert main(["index", str(synth_dir), "--out", str(copy_index), "--quiet"]) == 2
    assert "--ckpt CKPT" in capsys.readouterr().err
    stats = repair_and_compare(copy_index, synth_dir, reference, ckpt=dp_ckpt)
    assert stats.encoded_files == 0


def test_changed_model_bytes_are_index_damage(copy_index):
    file = copy_index / "model" / "model.safetensors"
    flip_last_bytes(file)
    with pytest.raises(IndexDamaged) as e:
        Index.open(copy_index)
    assert e.value.file == "model/model.safetensors" and "--ckpt CKPT" in str(e.value)


def test_search_cli_prints_one_line_naming_the_damaged_file(copy_index, capsys):
    rel = first_chunk_file(copy_index)
    truncate(copy_index / rel)
    capsys.readouterr()
    assert main(["search", str(copy_index), "a dog barks"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hade search: error: ") and "\n" not in err
    assert str(copy_index / rel) in err and "repair with `hade index" in err and "Traceback" not in err


def test_damage_after_open_raises_index_damaged_on_search(copy_index):
    with Index.open(copy_index) as ix:
        rel = first_chunk_file(copy_index)
        (copy_index / rel).unlink()
        with pytest.raises(IndexDamaged) as e:
            ix.search("a dog barks", k=3)
        assert e.value.file == rel
        h = ix.health()
        assert h.status == "degraded" and h.problems[0].file == rel and h.problems[0].kind == "chunk"
        assert h.repair.startswith("hade index") and rel in h.summary() and h.repair in h.summary()


def test_health_of_an_intact_index_is_ok(dp_index):
    with Index.open(dp_index[0]) as ix:
        assert ix.health().ok and ix.health().to_dict() == {"status": "ok", "problems": [], "repair": None}
    assert main(["index", "--check", str(dp_index[0])]) == 0


def test_stale_temporaries_are_removed_by_the_next_run(copy_index, synth_dir):
    (copy_index / ".model.abc123.tmp").mkdir()
    (copy_index / ".model.abc123.tmp" / "model.safetensors").write_bytes(b"x" * 1000)
    (copy_index / ".ann-7.faiss.xyz.tmp").write_bytes(b"y")
    (copy_index / "arrays" / ".c000099.q.tmp").mkdir()
    stats = build_index(synth_dir, copy_index, progress=False)
    assert not [p for p in copy_index.iterdir() if p.name.endswith(".tmp")]
    assert not [p for p in (copy_index / "arrays").iterdir() if p.name.startswith(".")]
    assert any(".model.abc123.tmp" in r for r in stats.repaired) and stats.encoded_files == 0


def test_index_without_checksums_opens_is_noted_and_backfilled(copy_index, synth_dir):
    db = sqlite3.connect(copy_index / "index.sqlite")
    db.execute("DROP TABLE integrity")
    db.commit()
    db.close()
    with Index.open(copy_index) as ix:  # an index from before checksums
        assert len(ix) == 24
    result = check_index(copy_index)
    assert result.ok and any("no checksum recorded" in n for n in result.notes)
    stats = build_index(synth_dir, copy_index, progress=False)
    assert stats.encoded_files == 0 and stats.repaired == []
    result = check_index(copy_index)
    assert result.ok and result.notes == []


def test_garbage_tokenizer_in_the_model_copy_is_damage(copy_index, synth_dir, dp_ckpt, reference, capsys):
    tok = sorted((copy_index / "model" / "tokenizer").glob("*.json"))[0]
    rel = tok.relative_to(copy_index).as_posix()
    tok.write_bytes(b"{" * tok.stat().st_size)  # same size: only the load (and the checksum) can tell
    with pytest.raises(IndexDamaged) as e:
        Index.open(copy_index)
    assert e.value.file == "model/" and "--ckpt CKPT" in str(e.value) and "\n" not in str(e.value)
    assert_check_names(copy_index, rel, capsys)
    with pytest.raises(IndexDamaged, match="--ckpt"):
        build_index(synth_dir, copy_index, progress=False)
    repair_and_compare(copy_index, synth_dir, reference, ckpt=dp_ckpt)
