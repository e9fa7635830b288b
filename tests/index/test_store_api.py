"""The index's storage behind one door: only hade.index.store's `Store` speaks SQL, and it answers with named records."""
from __future__ import annotations

import ast
import dataclasses
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import hade
from hade.errors import InputError
from hade.index import Index, build_index
from hade.index.meta import IndexMeta
from hade.index.settings import IndexSettings
from hade.index.store import (DatabaseError, FileRecord, IntegrityRecord, Placement, Store, WindowRecord, quick_check,
                              salvage_meta)
from hade.index.windows import window_batch, window_batches, window_bounds

SRC = Path(hade.__file__).parent
STORE = SRC / "index" / "store"  # the package: `Store`, built in layers, and the plain modules beside it
# besides Store (its layers), SQL may run only in the two readers of a database too damaged for a Store
DAMAGED_DB_READERS = {"quick_check", "salvage_meta"}
SQL_CALLS = {"execute", "executemany", "executescript"}


def sql_uses(source: str) -> list[str]:
    """What in `source` talks to SQLite directly: imports of sqlite3 and .execute*/ calls (as 'line: what')."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "sqlite3" for a in node.names):
            found.append(f"{node.lineno}: import sqlite3")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlite3":
            found.append(f"{node.lineno}: from sqlite3 import")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
            found.append(f"{node.lineno}: .{node.func.attr}(")
    return found


def test_the_checker_finds_direct_sql():
    src = ("import sqlite3\nfrom sqlite3 import connect\nconn.execute('x')\nc.executemany('y', [])\n"
           "c.executescript('z')\n")
    assert sql_uses(src) == ["1: import sqlite3", "2: from sqlite3 import", "3: .execute(", "4: .executemany(",
                             "5: .executescript("]
    assert sql_uses("store.files()\nexecute = 1\n") == []


def sql_owners(source: str) -> set[str]:
    """The top-level classes and functions of `source` that talk to SQLite ("<module>": at module level)."""
    owners = set()
    for node in ast.parse(source).body:
        if sql_uses(ast.unparse(node)):
            named = isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            owners.add(node.name if named else "<module>")
    return owners


def test_the_owner_check_names_classes_and_functions():
    src = "import sqlite3\nclass A:\n    def f(self):\n        self._conn.execute('x')\ndef g():\n    return 1\n"
    assert sql_owners(src) == {"<module>", "A"}


def test_only_the_store_speaks_sql():
    offenders = {str(p.relative_to(SRC)): uses for p in sorted(SRC.rglob("*.py")) if STORE not in p.parents
                 if (uses := sql_uses(p.read_text(encoding="utf-8")))}
    assert offenders == {}, f"SQL outside hade/index/store/ (add a Store method instead): {offenders}"
    owners = {p.name: sql_owners(p.read_text(encoding="utf-8")) for p in sorted(STORE.glob("*.py"))}
    door = {cls.__name__ for cls in Store.__mro__} | DAMAGED_DB_READERS | {"<module>"}
    assert {name: o - door for name, o in owners.items() if o - door} == {}, "SQL in the store package outside Store"
    assert owners["layout.py"] == owners["records.py"] == owners["__init__.py"] == set()
    assert all(owners[f"{m}.py"] for m in ("database", "integrity_rows", "chunks", "catalog"))  # where the SQL is


def test_each_layer_of_the_store_uses_only_the_layers_below():
    """`Store`'s layers (one module each) reach `self` only for what they or the layers below define."""
    instance = {"root", "repair", "_conn", "_select_files"}  # set in __init__ (StoreDatabase; Store)
    for cls in Store.__mro__[:-1]:
        tree = ast.parse((STORE / f"{cls.__module__.rsplit('.', 1)[1]}.py").read_text(encoding="utf-8"))
        node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
        used = {n.attr for n in ast.walk(node)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"}
        assert used - set(dir(cls)) - instance == set(), cls.__name__
    assert [cls.__name__ for cls in Store.__mro__] == ["Store", "StoreChunks", "StoreIntegrity", "StoreDatabase",
                                                       "object"]


def _file(path: str, sha: str = "s", status: str = "ok", aux: str | None = None, id: int | None = None) -> FileRecord:
    return FileRecord(id, path, 10, 123, sha, status, "bad header" if status == "error" else None,
                      1.5 if status == "ok" else 0.0, 2 if status == "ok" else 0, aux)


def test_store_files_and_windows_come_back_as_named_records(tmp_path):
    store = Store(tmp_path / "idx", create=True)
    with store.transaction():
        a = store.add_file(_file("a.wav", sha="x"))
        b = store.add_file(_file("b.wav", sha="y", status="error"))
        c = store.add_file(_file("c.wav", sha="x", aux="a dog", id=7))
        store.put_windows([WindowRecord(a, 0.0, 1.0, 0, 8000, 1, 0), WindowRecord(a, 0.5, 1.5, 4000, 12000, 1, 1),
                           WindowRecord(c, 0.0, 1.0, 0, 8000, 2, 0, id=40)])
    assert (a, b, c) == (1, 2, 7)
    rec = store.file_record("a.wav")
    assert isinstance(rec, FileRecord) and rec == _file("a.wav", sha="x", id=1)
    assert (rec.path, rec.sha256, rec.status, rec.num_windows, rec.aux_caption) == ("a.wav", "x", "ok", 2, None)
    assert store.file_record("nope.wav") is None
    assert [f.path for f in store.files()] == ["a.wav", "b.wav", "c.wav"]
    assert [f.path for f in store.files("error")] == ["b.wav"] and store.files("error")[0].error == "bad header"
    assert (store.count_files(), store.count_files("ok"), store.count_files("error")) == (3, 2, 1)
    wins = store.file_windows(a)
    assert wins == [WindowRecord(1, 0.0, 1.0, 0, 8000, 1, 0, id=1), WindowRecord(1, 0.5, 1.5, 4000, 12000, 1, 1, id=2)]
    assert wins[1].start_sample == 4000 and wins[1].chunk == 1 and wins[1].row == 1
    assert store.file_windows(c)[0].id == 40 and store.count_windows() == 3
    with pytest.raises(AttributeError):  # records are immutable
        rec.path = "other.wav"
    store.close()


def test_same_content_reuses_only_windows_encoded_with_the_same_caption(tmp_path):
    store = Store(tmp_path / "idx", create=True)
    with store.transaction():
        store.add_file(_file("a.wav", sha="x"))
        store.add_file(_file("c.wav", sha="x", aux="a dog"))
        store.add_file(_file("e.wav", sha="bad", status="error"))
    assert store.same_content("x", "new.wav", None).path == "a.wav"
    assert store.same_content("x", "new.wav", "a dog").path == "c.wav"
    assert store.same_content("x", "a.wav", None) is None  # never the file itself
    assert store.same_content("x", "new.wav", "a cat") is None
    assert store.same_content("bad", "new.wav", "any caption").status == "error"  # unreadable whatever the caption
    store.close()


def test_touch_remove_and_chunk_bookkeeping(tmp_path):
    store = Store(tmp_path / "idx", create=True)
    cid = store.write_chunk({"embed": np.ones((3, 4), np.float16)})
    with store.transaction():
        store.register_chunk(cid, 3)
        a, b = store.add_file(_file("a.wav")), store.add_file(_file("b.wav"))
        store.put_windows([WindowRecord(a, 0, 1, 0, 1, cid, 0), WindowRecord(a, 1, 2, 1, 2, cid, 1),
                           WindowRecord(b, 0, 1, 0, 1, cid, 2)])
    assert store.chunk_ids() == [cid] and store.chunk_totals() == (3, 1)
    assert store.paths_in_chunks([cid]) == ["a.wav", "b.wav"] and store.paths_in_chunks([cid + 1]) == []
    recs = store.integrity_records()
    rel = f"arrays/c{cid:06d}/embed.npy"
    assert isinstance(recs[rel], IntegrityRecord) and recs[rel].size == (tmp_path / "idx" / rel).stat().st_size
    assert recs[rel].sha256 is not None and recs[rel].mtime_ns is not None
    with store.transaction():
        store.touch_file("a.wav", 99, 456)
        store.move_windows([Placement(window_id=3, chunk=cid, row=0)])
        store.remove_files(["a.wav"])
    assert store.file_record("b.wav").size == 10 and [f.path for f in store.files()] == ["b.wav"]
    assert store.file_windows(b)[0].row == 0 and store.count_windows() == 1  # a.wav's windows went with it
    with store.transaction():
        store.forget_chunks([cid])
    assert store.chunk_ids() == [] and rel not in store.integrity_records()
    store.close()


def test_a_failed_transaction_leaves_nothing(tmp_path):
    store = Store(tmp_path / "idx", create=True)
    with pytest.raises(KeyboardInterrupt), store.transaction():
        store.add_file(_file("a.wav"))
        raise KeyboardInterrupt
    assert store.files() == [] and store.meta() == IndexMeta() and not store.meta().created
    store.close()


def test_an_index_from_before_auxiliary_captions_reads_with_none(tmp_path):
    store = Store(tmp_path / "idx", create=True)
    store.close()
    with sqlite3.connect(tmp_path / "idx" / "index.sqlite") as db:  # the files table as older hade wrote it
        db.executescript("DROP TABLE files; CREATE TABLE files (id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT "
                         "NOT NULL UNIQUE, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT, status TEXT "
                         "NOT NULL, error TEXT, duration REAL, num_windows INTEGER NOT NULL DEFAULT 0);"
                         "INSERT INTO files(path, size, mtime_ns, sha256, status, duration, num_windows) "
                         "VALUES('a.wav', 10, 123, 'x', 'ok', 1.5, 2);")
    old = Store(tmp_path / "idx")
    assert "aux_caption" not in old.file_columns()
    assert old.files() == [FileRecord(1, "a.wav", 10, 123, "x", "ok", None, 1.5, 2, None)]
    assert old.same_content("x", "b.wav", None).path == "a.wav"
    old.close()


def test_a_damaged_database_is_reported_without_sqlite3(tmp_path):
    bad = tmp_path / "index.sqlite"
    bad.write_bytes(b"SQLite format 3\x00" + b"\xff" * 300)
    with pytest.raises(DatabaseError):
        quick_check(bad)
    assert salvage_meta(bad) == IndexMeta()
    good = Store(tmp_path / "idx", create=True)
    with good.transaction():
        good.update_meta(schema=1, storage_dtype="float32")
    good.close()
    assert quick_check(tmp_path / "idx" / "index.sqlite") == []
    assert salvage_meta(tmp_path / "idx" / "index.sqlite") == IndexMeta(schema=1, storage_dtype="float32")


def test_one_window_batcher_pads_each_window_to_the_window_length():
    wave = np.arange(10, dtype=np.float32) + 1
    bounds = window_bounds(len(wave), 4, 3)  # (0, 4), (3, 7), (6, 10)
    batches = list(window_batches(wave, bounds, 4, 2))
    assert [b.shape for b in batches] == [(2, 4), (1, 4)] and all(b.dtype == np.float32 for b in batches)
    np.testing.assert_array_equal(np.concatenate(batches), [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10]])
    short = window_batch([wave[:2], wave[5:9]], 4)  # a file shorter than a window is zero-padded
    np.testing.assert_array_equal(short, [[1, 2, 0, 0], [6, 7, 8, 9]])


@pytest.fixture
def two_files(tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.wav", "b.wav"):
        sf.write(folder / name, rng.uniform(-0.5, 0.5, 8000).astype(np.float32), 8000)
    return folder


def test_storage_dtype_is_checked_kept_and_stored(dp_ckpt, two_files, tmp_path):
    with pytest.raises(InputError, match=r"storage_dtype: expected one of \['float16', 'float32'\], got 'bf16'"):
        build_index(two_files, tmp_path / "x.idx", dp_ckpt, storage_dtype="bf16", progress=False)
    out = tmp_path / "f32.idx"
    build_index(two_files, out, dp_ckpt, storage_dtype="float32", progress=False)
    with Index.open(out) as ix:
        info = ix.info()
        assert info.storage_dtype == info.to_dict()["precision"] == "float32"  # "precision": the name older callers read
        assert ix.reprs.gather(np.arange(len(ix)))["embed"].dtype == np.float32
    with pytest.raises(InputError, match="the index stores float32; use --rebuild"):
        build_index(two_files, out, storage_dtype="float16", progress=False)
    with pytest.raises(InputError, match=r"unknown field\(s\) \['precision'\]"):  # the old keyword is gone
        build_index(two_files, out, precision="float32", progress=False)
    assert build_index(two_files, out, settings=IndexSettings(storage_dtype="float32", progress=False)).unchanged_files == 2


def test_index_open_takes_a_compute_dtype(dp_index):
    with pytest.raises(InputError, match="compute: fp16 needs a CUDA device"):
        Index.open(dp_index[0], compute="fp16")
    with pytest.raises(InputError, match=r"compute: expected one of"):
        Index.open(dp_index[0], compute="float16")
    with pytest.raises(TypeError, match="precision"):  # the old name of compute is gone
        Index.open(dp_index[0], precision="bf16")
    with Index.open(dp_index[0], compute="bf16") as ix:
        assert len(ix) == 24


def test_records_are_plain_named_tuples():
    assert FileRecord._fields == ("id", "path", "size", "mtime_ns", "sha256", "status", "error", "duration",
                                  "num_windows", "aux_caption")  # the files table's columns, in order
    w = WindowRecord(3, 0.0, 1.0, 0, 8000, 2, 5)
    assert w.id is None and w._replace(id=9).id == 9 and not dataclasses.is_dataclass(w)
