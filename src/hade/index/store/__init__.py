"""The on-disk store of a search index: SQLite metadata plus immutable numpy chunks of representations.

Storage behind one door: every SQL statement of the index is a `Store` method, and rows come back as named
records (`FileRecord`, `WindowRecord`, `IntegrityRecord`); no other module talks to SQLite (outside this
package; `tests/index/test_store_api.py` checks both). `Store` is one class, built in layers, each a module
that uses only the layers below it:

| module | holds |
| --- | --- |
| `layout.py` | the names of an index directory's files (`DB_FILE`, `ARRAYS_DIR`, `chunk_name`, ...), the model copy's fingerprint and copy, `write_lock`; no SQL |
| `records.py` | the named records and how the files table keeps a path (`db_path`, `path_of_db`); no SQL |
| `database.py` | `StoreDatabase`: the connection, `SCHEMA` and its migrations, transactions, the meta table; `quick_check` and `salvage_meta` for a database too damaged to open |
| `integrity_rows.py` | `StoreIntegrity`: the integrity table, read-time verification (`verify_read`) |
| `chunks.py` | `StoreChunks`: chunk folders and codec sets, their rows, `load_array`, `cleanup` |
| `catalog.py` | `Store`: the files and windows tables, `window_table` — the class everyone opens |

Every name is imported from here (`from hade.index.store import Store, FileRecord, DB_FILE, ...`).
"""
from hade.index.store.catalog import Store
from hade.index.store.database import SCHEMA, DatabaseError, quick_check, salvage_meta
from hade.index.store.layout import (ANN_JSON, ARRAYS_DIR, CODECS_DIR, CODES_SUFFIX, DB_FILE, LOCK_FILE, MODEL_DIR,
                                     MODEL_FILES, TOKENIZER_DIR, chunk_name, copy_model, model_fingerprint,
                                     sha256_file, write_lock)
from hade.index.store.records import (FileRecord, IntegrityRecord, Placement, WindowRecord, db_path,
                                      path_of_db)

__all__ = ["ANN_JSON", "ARRAYS_DIR", "CODECS_DIR", "CODES_SUFFIX", "DB_FILE", "LOCK_FILE", "MODEL_DIR", "MODEL_FILES",
           "SCHEMA", "TOKENIZER_DIR", "DatabaseError", "FileRecord", "IntegrityRecord", "Placement", "Store",
           "WindowRecord", "chunk_name", "copy_model", "db_path", "model_fingerprint", "path_of_db", "quick_check",
           "salvage_meta", "sha256_file", "write_lock"]
