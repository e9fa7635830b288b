"""Same-size damage of every kind of index file is found where the file is read: search refuses in one
line naming the file and the repair command, never answers from damaged data, and /health then says so."""
from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import threading

import numpy as np
import pytest

from hade.cli import main
from hade.errors import IndexDamaged
from hade.index import Index, build_index, check_index
from hade.index import checksums
from hade.index.integrity import health

CODEC = "PQ16"  # 64-dim tokens of the tiny tha+dcr model (as tests/index/test_compressed_index.py)


@pytest.fixture(autouse=True)
def _fresh_verdicts():
    """Each test sees files as a new process would (the verdicts are per process)."""
    checksums.forget()
    yield
    checksums.forget()


@pytest.fixture(scope="module")
def coded_index(tiny_model_config, synth_dir, tmp_path_factory, single_thread):
    """A tha+dcr index whose token keys are stored as codes with a codec set."""
    import hade
    import torch
    from hade.checkpoint import save_model

    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_model_config, head="tha+dcr", text_config=None, embed_dim=64)
    root = tmp_path_factory.mktemp("verify")
    with single_thread():
        save_model(hade.create_model(cfg), root / "ckpt")
        build_index(synth_dir, root / "coded", root / "ckpt", progress=False, token_codec=CODEC,
                    token_codec_min_tokens=0)  # a small index fits its codec at once (its codec files are damaged below)
    return root / "coded"


@pytest.fixture
def copy_dp(dp_index, tmp_path):
    dst = tmp_path / "dp.idx"
    shutil.copytree(dp_index[0], dst)
    return dst


@pytest.fixture
def copy_coded(coded_index, tmp_path):
    dst = tmp_path / "coded.idx"
    shutil.copytree(coded_index, dst)
    return dst


def overwrite(file, at: int, data: bytes) -> None:
    """Same-size damage: `data` written over the file's bytes at offset `at` (negative: from the end)."""
    size = file.stat().st_size
    with open(file, "r+b") as f:
        f.seek(at % size)
        f.write(data)
    assert file.stat().st_size == size


def rel_of(index_dir, pattern: str) -> str:
    return sorted(p.relative_to(index_dir).as_posix() for p in index_dir.glob(pattern))[0]


def assert_search_refuses(index_dir, rel, capsys, query: str = "a dog barks") -> None:
    """The CLI prints one line naming INDEX/rel and the repair command; the library raises IndexDamaged;
    health then reports the file."""
    checksums.forget()
    capsys.readouterr()
    assert main(["search", str(index_dir), query, "--json"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and "\n" not in err and "Traceback" not in err
    assert str(index_dir / rel) in err and "repair with `hade index" in err and f"--out {index_dir}" in err
    checksums.forget()
    with pytest.raises(IndexDamaged) as e:
        with Index.open(index_dir) as ix:
            ix.search(query, k=5)
            ix.search(query, k=5, exhaustive=True)
    assert e.value.file == rel and e.value.repair.startswith("hade index ")
    h = health(index_dir)
    assert h.status == "degraded" and rel in [p.file for p in h.problems]
    assert not check_index(index_dir).ok


def test_overwritten_bytes_in_a_chunk_array(copy_dp, capsys):
    rel = rel_of(copy_dp, "arrays/c*/embed.npy")
    overwrite(copy_dp / rel, -64, np.full(32, 126.4, np.float16).tobytes())
    assert_search_refuses(copy_dp, rel, capsys)


def test_overwritten_npy_header(copy_dp, capsys):
    rel = rel_of(copy_dp, "arrays/c*/embed.npy")
    overwrite(copy_dp / rel, 10, b"{'descr': '<f2', 'fortran_order': False, 'shape': (((((")
    assert_search_refuses(copy_dp, rel, capsys)


def test_overwritten_codes(copy_coded, capsys):
    rel = rel_of(copy_coded, "arrays/c*/tha_audio_0.codes.npy")
    overwrite(copy_coded / rel, -300, bytes(range(200)))
    assert_search_refuses(copy_coded, rel, capsys)


@pytest.mark.parametrize("suffix", [".faiss", ".json"])
def test_damaged_codec_file_is_refused_at_open_with_its_own_path(copy_coded, suffix, capsys):
    rel = rel_of(copy_coded, f"codecs/*/tha_audio_0{suffix}")
    overwrite(copy_coded / rel, -40, b"\xff" * 20 if suffix == ".faiss" else b"}" * 20)
    with pytest.raises(IndexDamaged) as e:
        Index.open(copy_coded)
    assert e.value.file == rel and str(copy_coded / rel) in str(e.value) and "/.json" not in str(e.value)
    assert "repair with `hade index" in str(e.value) and "\n" not in str(e.value)
    h = health(copy_coded)
    assert h.status == "degraded" and h.problems[0].file == rel and h.repair.startswith("hade index")
    checksums.forget()
    assert main(["search", str(copy_coded), "a dog barks"]) == 2
    assert str(copy_coded / rel) in capsys.readouterr().err


def test_damaged_ann_is_refused_at_open(copy_dp):
    rel = next(copy_dp.glob("ann-*.faiss")).name
    overwrite(copy_dp / rel, -48, b"\x00\x00\x80\x7f" * 8)  # float32 inf/NaN-like bytes in the vectors
    with pytest.raises(IndexDamaged) as e:
        Index.open(copy_dp)
    assert e.value.file == rel and "checksum" in str(e.value)


def test_damaged_sqlite_page_is_one_line(copy_dp, capsys):
    db = copy_dp / "index.sqlite"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = con.execute("PRAGMA page_size").fetchone()[0]
    root = con.execute("SELECT rootpage FROM sqlite_master WHERE name='windows'").fetchone()[0]
    con.close()
    overwrite(db, (root - 1) * page, b"\x0f" * 64)  # the windows table's root page header
    capsys.readouterr()
    assert main(["search", str(copy_dp), "a dog barks"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "index.sqlite" in err and "repair with" in err and "Traceback" not in err


def test_scores_a_head_cannot_produce_are_damage_not_results(copy_dp, capsys):
    """Damage the checksums cannot see (the record rewritten with it) still never becomes a result."""
    from hade.index.store import Store

    rel = rel_of(copy_dp, "arrays/c*/embed.npy")
    arr = np.load(copy_dp / rel)
    arr[0] = 8.0  # far beyond a unit vector: cosines of up to 8 * sqrt(D)
    np.save(copy_dp / rel, arr)
    store = Store(copy_dp)
    with store.transaction():
        store.record_files([rel])
    store.close()
    with pytest.raises(IndexDamaged) as e, Index.open(copy_dp) as ix:
        ix.search("a dog barks", k=100, exhaustive=True)
    assert e.value.file.startswith("arrays/c") and "outside [-1, 1]" in str(e.value)
    arr[0] = np.nan
    np.save(copy_dp / rel, arr)
    store = Store(copy_dp)
    with store.transaction():
        store.record_files([rel])
    store.close()
    assert main(["search", str(copy_dp), "a dog barks", "-k", "100", "--exhaustive", "--json"]) == 2
    captured = capsys.readouterr()
    assert "NaN" not in captured.out and "not a number" in captured.err


def background_verification_done() -> None:
    for thread in threading.enumerate():
        if thread.name == "hade-verify":
            thread.join()


def test_intact_index_is_verified_once_per_process(dp_index, monkeypatch):
    calls = []
    real = checksums.xxh3_file
    monkeypatch.setattr(checksums, "xxh3_file", lambda p: calls.append(str(p)) or real(p))
    with Index.open(dp_index[0]) as ix:
        first = ix.search("a dog barks", k=3)
        background_verification_done()
        hashed = len(calls)
        files = [p for p in dp_index[0].rglob("*") if p.suffix in (".npy", ".faiss")]
        assert sorted(calls) == sorted(str(p) for p in files)  # each once: the ANN at open, the arrays
        assert ix.search("a dog barks", k=3) == first and len(calls) == hashed
    with Index.open(dp_index[0]) as ix:
        ix.search("a dog barks", k=3)
        background_verification_done()
    assert len(calls) == hashed  # a second open in the same process hashes nothing again


def test_damage_is_found_in_the_background_after_open(copy_dp):
    """Index.open hashes the chunk arrays in a background thread: /health reports same-size damage
    before any search meets it."""
    rel = rel_of(copy_dp, "arrays/c*/embed.npy")
    overwrite(copy_dp / rel, -16, b"\x00" * 16)
    with Index.open(copy_dp) as ix:
        background_verification_done()
        h = ix.health()
        assert h.status == "degraded" and h.problems[0].file == rel
        assert "checksum" in h.problems[0].problem
        with pytest.raises(IndexDamaged):
            ix.search("a dog barks", k=3)


def test_search_json_is_valid_json(dp_index, capsys):
    capsys.readouterr()
    assert main(["search", str(dp_index[0]), "a dog barks", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert hits and all(-1.01 <= h["score"] <= 1.01 for h in hits)


def test_like_at_beyond_the_file_is_an_error(dp_index, capsys):
    with Index.open(dp_index[0]) as ix:
        path = ix.get(int(ix.table["id"][0])).path
    capsys.readouterr()
    assert main(["search", str(dp_index[0]), "--like", path, "--at", "1e12"]) == 2
    err = capsys.readouterr().err
    assert "--at 1e+12" in err and "ends at" in err


# ---- item 7: check, search and a re-run agree --------------------------------------------------------
def test_deleted_database_has_a_repair_command_and_a_rerun_rebuilds(copy_dp, synth_dir, capsys):
    (copy_dp / "index.sqlite").unlink()
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (copy_dp / extra).unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["index", "--check", str(copy_dp)]) == 1
    out = capsys.readouterr().out
    assert "repair with: hade index FOLDER --out" in out and "None" not in out
    stats = build_index(synth_dir, copy_dp, progress=False)
    assert any("index.sqlite was missing" in note for note in stats.repaired)
    assert check_index(copy_dp).ok
    with Index.open(copy_dp) as ix:
        assert ix.search("a dog barks", k=3)


def test_a_user_folder_is_never_taken_for_an_index_without_database(dp_ckpt, synth_dir, tmp_path):
    from hade.errors import InputError

    out = tmp_path / "mine"
    (out / "arrays").mkdir(parents=True)
    (out / "arrays" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a hade index"):
        build_index(synth_dir, out, dp_ckpt, progress=False)
    assert (out / "arrays" / "notes.txt").read_text() == "mine"


def test_check_and_search_agree_on_an_index_killed_before_its_first_chunk(dp_ckpt, synth_dir, tmp_path,
                                                                          monkeypatch, capsys):
    from hade.errors import InputError
    from hade.index.builder import Builder

    def killed(self, files):
        raise KeyboardInterrupt

    monkeypatch.setattr(Builder, "run", killed)
    with pytest.raises(KeyboardInterrupt):
        build_index(synth_dir, tmp_path / "killed", dp_ckpt, progress=False)
    monkeypatch.undo()
    with pytest.raises(InputError):
        Index.open(tmp_path / "killed")
    result = check_index(tmp_path / "killed")
    assert not result.ok and result.repair.startswith("hade index ")
    capsys.readouterr()
    assert main(["index", "--check", str(tmp_path / "killed")]) == 1
    assert "intact" not in capsys.readouterr().out
    build_index(synth_dir, tmp_path / "killed", progress=False)
    assert check_index(tmp_path / "killed").ok
