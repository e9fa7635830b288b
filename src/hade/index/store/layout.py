"""What an index directory holds, by name: the on-disk layout, the model copy's fingerprint, the write lock.

Layout of an index directory ``INDEX/``::

    index.sqlite        meta (key -> JSON), files, windows, chunks, integrity (see SCHEMA)
    arrays/c000001/     one chunk: ``{repr key}.npy`` for each key of the head's ``audio_repr``,
                        rows = windows, e.g. ``embed.npy`` [R, D] or ``tha_audio_0.npy`` [R, M, d];
                        floating point in the storage dtype, float16 by default (`--storage-dtype
                        float32` keeps float32): unit vectors and projected tokens lose ~1e-3
                        relative, which moves scores by ~1e-3 and is far below score gaps that
                        matter; a value beyond the float16 range stops the build with a message
                        asking for float32. Masks/ints as is. In a chunk written with a token
                        codec set (the chunks table's ``codec``), each token key is stored as
                        ``{key}.codes.npy`` [R, M, B] uint8 instead (`hade.index.tokens`).
    codecs/<id>/        a token codec set (``codecs.json`` + ``{key}.faiss``/``.json`` a key), named by
                        the sha256 of its files, shared by the chunks that name it
    ann-<gen>.faiss     the ANN index over the pooled embeddings (see ``hade.index.ann``)
    ann.json            which ANN file is current, its type and parameters, the generation it reflects
    model/              a copy of the checkpoint (config.json, model.safetensors, tokenizer/)
    .lock               held (flock) while ``hade index`` writes

Nothing here speaks SQL (`hade.index.store.Store` is the one door to the database); these are the names and
file operations every part of the store, and the modules that check or repair an index, share.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from hade.errors import InputError
from hade.utils.atomic import atomic_dir

DB_FILE = "index.sqlite"
ARRAYS_DIR = "arrays"
CODECS_DIR = "codecs"
CODES_SUFFIX = ".codes"  # a token key's codes are the array "{key}.codes"
MODEL_DIR = "model"
LOCK_FILE = ".lock"
ANN_JSON = "ann.json"
MODEL_FILES = ("config.json", "model.safetensors")
TOKENIZER_DIR = "tokenizer"

CHUNK_DIR_RE = re.compile(r"^c(\d{6,})$")  # a chunk folder's name: `chunk_name` of its id


def chunk_name(chunk_id: int) -> str:
    return f"c{chunk_id:06d}"


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(block):
            h.update(data)
    return h.hexdigest()


def model_fingerprint(ckpt: str | Path) -> str:
    """sha256 over config.json and model.safetensors of a checkpoint directory (names and bytes)."""
    ckpt = Path(ckpt)
    h = hashlib.sha256()
    for name in MODEL_FILES:
        file = ckpt / name
        if not file.is_file():
            raise InputError(f"{ckpt}: not a hade checkpoint (no {name}); give a directory written by `hade train`")
        h.update(name.encode() + b"\0" + sha256_file(file).encode() + b"\0")
    return h.hexdigest()


def copy_model(ckpt: str | Path, dest: str | Path) -> None:
    """Copy the files a checkpoint needs for inference (not its training state) atomically to `dest`."""
    ckpt = Path(ckpt)
    with atomic_dir(dest) as tmp:
        for name in MODEL_FILES:
            shutil.copy2(ckpt / name, tmp / name)
        if (ckpt / TOKENIZER_DIR).is_dir():
            shutil.copytree(ckpt / TOKENIZER_DIR, tmp / TOKENIZER_DIR)


@contextlib.contextmanager
def write_lock(index_dir: str | Path) -> Iterator[None]:
    """Exclusive lock on INDEX/.lock for one writer; a second `hade index` on the same index fails fast."""
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(index_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{index_dir}: another `hade index` is writing this index; "
                             "wait for it to finish") from None
        yield
    finally:
        os.close(fd)
