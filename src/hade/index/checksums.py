"""Checksums of index files, and the per-process record of which files were verified when first read.

Every file an index writes besides the database gets two digests when it becomes part of the index
(`hade.index.store.Store.record_files`): **sha256**, which ``hade index --check`` and a re-run compare,
and **XXH3-128** (the `xxhash` package), which a reading process compares the first time it opens the
file (`verify`): it hashed 1.28 GB from the page cache 7x faster than sha256 (1.71 against 0.23 GB/s on
the shared 2-core machine, benchmarks/verify.py; docs/security.md), so a search can afford to hash every
array it reads before trusting it. XXH3 is not cryptographic: it finds
damage (bit rot, a partial overwrite, a stray write), not a forgery by someone who can write the index
folder — such a writer can rewrite the database too (docs/security.md).

`Index.open` hands the chunk arrays to a background thread (`verify_in_background`) before it loads the
model, so that hashing overlaps the model's loading and the first search mostly finds its files verified.
Verdicts are kept per process, keyed by the file's absolute path and its stat signature (device, inode,
size, mtime and ctime): a file replaced or written since it was verified is hashed again when next
opened; one that was found damaged stays damaged (and `known_damage` reports it to ``/health``) until it
changes.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import NamedTuple

import xxhash

BLOCK = 4 << 20  # bytes hashed per read: large enough that the per-call overhead is noise


class Digests(NamedTuple):
    sha256: str
    xxh3: str


def file_digests(path: str | Path) -> Digests:
    """sha256 and XXH3-128 (hex) of a file's bytes, read once in `BLOCK` blocks."""
    sha, fast = hashlib.sha256(), xxhash.xxh3_128()
    for block in _blocks(path):
        sha.update(block)
        fast.update(block)
    return Digests(sha.hexdigest(), fast.hexdigest())


def xxh3_file(path: str | Path) -> str:
    """Hex XXH3-128 of a file's bytes."""
    h = xxhash.xxh3_128()
    for block in _blocks(path):
        h.update(block)
    return h.hexdigest()


def _blocks(path: str | Path):
    """The file's bytes as memoryviews of one reused `BLOCK` buffer (no allocation per block)."""
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            yield view[:n]


class Expected(NamedTuple):
    """What was recorded of a file when it was written (`xxh3` None for records written before it: then
    sha256, slower, is compared instead)."""

    size: int
    sha256: str | None
    xxh3: str | None


_Signature = tuple[int, int, int, int, int]
_verdicts: dict[str, tuple[_Signature, str | None]] = {}
_hashing: dict[str, threading.Event] = {}  # files being hashed now (by a search or `verify_in_background`)
_lock = threading.Lock()


def _signature(st: os.stat_result) -> _Signature:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def verify(path: str | Path, expected: Expected) -> str | None:
    """None when the file's bytes are the recorded ones, else the problem as a phrase ("missing",
    "corrupt (...)"). Hashes the file only the first time this process sees it in its current state."""
    key = os.path.abspath(path)
    try:
        st = os.stat(key)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    sig = _signature(st)
    while True:
        with _lock:
            seen = _verdicts.get(key)
            if seen is not None and seen[0] == sig:
                return seen[1]
            running = _hashing.get(key)
            if running is None:
                running = _hashing[key] = threading.Event()
                break
        running.wait()  # another thread is hashing it: take its verdict (or hash again if the file changed)
    try:
        problem = _compare(key, st.st_size, expected)
        with _lock:
            _verdicts[key] = (sig, problem)
    finally:
        with _lock:
            _hashing.pop(key, None)
        running.set()
    return problem


def verify_in_background(files: list[tuple[str, Expected]], stop: threading.Event) -> threading.Thread:
    """Start a daemon thread that verifies `files` ((path, what was recorded)) one after the other until
    `stop` is set, so that their verdicts are ready when a search first reads them (`Index.open` starts
    it before loading the model, which then overlaps the hashing). A search reaching a file first hashes
    it itself; one reaching a file the thread is hashing waits for that verdict."""

    def run() -> None:
        for path, expected in files:
            if stop.is_set():
                return
            verify(path, expected)

    thread = threading.Thread(target=run, name="hade-verify", daemon=True)
    thread.start()
    return thread


def _compare(path: str, size: int, expected: Expected) -> str | None:
    if size != expected.size:
        what = "truncated" if size < expected.size else "the wrong size"
        return f"{what} (expected {expected.size} bytes, found {size})"
    try:
        if expected.xxh3 is not None:
            ok, name = xxh3_file(path) == expected.xxh3, "checksum"
        elif expected.sha256 is not None:
            ok, name = file_digests(path).sha256 == expected.sha256, "sha256"
        else:
            return None
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None if ok else f"corrupt (its {name} differs from the one recorded when it was written)"


def known_damage(paths: dict[str, str]) -> dict[str, str]:
    """{relative path: problem} of the files among `paths` ({relative path: absolute path}) that this
    process found damaged when it read them and that have not changed since (a stat each, no hashing)."""
    out = {}
    for rel, path in paths.items():
        with _lock:
            seen = _verdicts.get(os.path.abspath(path))
        if seen is None or seen[1] is None:
            continue
        try:
            if _signature(os.stat(path)) == seen[0]:
                out[rel] = seen[1]
        except OSError:
            continue  # gone: the size check reports it
    return out


def forget() -> None:
    """Drop every verdict (tests; a process that wants to hash again)."""
    with _lock:
        _verdicts.clear()
