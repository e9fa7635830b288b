"""The named records the store answers with (`FileRecord`, `WindowRecord`, `IntegrityRecord`, `Placement`),
and how the files table keeps a path.

File paths: a name that is not UTF-8 is kept as its bytes (a BLOB, `db_path`) and read back with
surrogate escapes (`path_of_db`), so any name the file system allows is indexed.
"""
from __future__ import annotations

import os
from typing import NamedTuple


class FileRecord(NamedTuple):
    """One row of the files table: an audio file as indexed (`id` None for one not yet inserted)."""

    id: int | None
    path: str  # POSIX, relative to the indexed folder
    size: int
    mtime_ns: int
    sha256: str | None
    status: str  # 'ok' or 'error'
    error: str | None  # why an 'error' file was skipped
    duration: float | None  # seconds at the model's rate
    num_windows: int
    aux_caption: str | None  # the auxiliary caption its windows were encoded with (HCI+AC)


class WindowRecord(NamedTuple):
    """One row of the windows table: a span of a file and where its representations are (`id` None: the
    store numbers it)."""

    file_id: int
    start: float  # seconds in the file
    end: float
    start_sample: int  # at the model's sample rate
    end_sample: int
    chunk: int
    row: int
    id: int | None = None


class IntegrityRecord(NamedTuple):
    """What the integrity table recorded of an index file when it was written (`mtime_ns`, `sha256` None
    for records of indexes written before checksums; `xxh3` None for those written before read-time
    verification)."""

    size: int
    mtime_ns: int | None
    sha256: str | None
    xxh3: str | None = None


class Placement(NamedTuple):
    """Where a window's representations live after compaction."""

    window_id: int
    chunk: int
    row: int


FILE_COLUMNS = FileRecord._fields
WINDOW_COLUMNS = WindowRecord._fields


def db_path(rel: str) -> str | bytes:
    """A relative path as the files table keeps it: text when it is valid UTF-8, else its file-system
    bytes as a BLOB. File names are bytes on POSIX; one that is not UTF-8 (a Latin-1 ``n\\xe4me.wav``)
    reaches Python as text with surrogate escapes (PEP 383), which SQLite's text cannot hold."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(rel)
    return rel


def path_of_db(value: str | bytes) -> str:
    """The relative path `db_path` stored, as Python's file functions take it."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def file_record(row: tuple) -> FileRecord:
    """A files-table row (the columns of FILE_COLUMNS, in order) as a FileRecord, its path decoded."""
    record = FileRecord(*row)
    return record._replace(path=path_of_db(record.path)) if isinstance(record.path, bytes) else record
