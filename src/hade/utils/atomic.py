"""Atomic writes: everything is written to a temporary sibling and renamed into place, so a killed
job leaves either the old or the new version, never half a file.

Temporaries are named `.{target name}.{random}.{pid}@{host}.tmp`: a killed job leaves one behind (a
checkpoint's is tens of MB), and the owner in the name lets `remove_stale_temps` tell it from one that a
running job is still writing.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

# A temporary without a live owner on this host (or of an unknown host) is stale once untouched this long.
FOREIGN_TEMP_AGE_S = 24 * 3600


def _temp_suffix() -> str:
    return f".{os.getpid()}@{socket.gethostname()}.tmp"


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside `target`; on success it replaces `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=_temp_suffix())
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; results are meant to be shared
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json_atomic(target: str | Path, data: Any) -> None:
    write_text_atomic(target, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `target`; on success it replaces the directory `target`.

    The swap is two renames (old aside, new in); a crash between them leaves `target` missing but the
    previous version intact under `.{name}.old`, which `recover_dir` puts back.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=_temp_suffix()))
    os.chmod(tmp, 0o755)  # mkdtemp makes owner-only folders; checkpoints and indexes are meant to be shared
    old = target.parent / f".{target.name}.old"
    try:
        yield tmp
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def recover_dir(target: str | Path) -> None:
    """Restore `target` from its `.old` copy when a swap was interrupted, and remove the temporaries that
    killed writes of `target` left behind."""
    target = Path(target)
    old = target.parent / f".{target.name}.old"
    if not target.exists() and old.exists():
        os.replace(old, target)
    remove_stale_temps(target)


def _owner_alive(pid: int, host: str) -> bool | None:
    """Whether process `pid` runs; None when it ran on another host (this one cannot tell)."""
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _is_stale(path: Path, owner: re.Match[str], foreign_age_s: float) -> bool:
    if owner.group("pid") is not None:
        alive = _owner_alive(int(owner.group("pid")), owner.group("host"))
        if alive is not None:
            return not alive
    try:  # another host's, or written before owners were recorded: judge by age
        return time.time() - path.lstat().st_mtime >= foreign_age_s
    except FileNotFoundError:  # its writer just finished
        return False


def remove_stale_temps(target: str | Path, foreign_age_s: float = FOREIGN_TEMP_AGE_S) -> list[Path]:
    """Remove the temporaries (`.{name}.*.tmp`, files or folders) that killed atomic writes of `target`
    left beside it. Those of a writer still running on this host are kept; those whose writer this host
    cannot check (another host, or no owner in the name) are removed once untouched for `foreign_age_s`
    seconds (0: always, for a caller that knows it is the only writer). Returns the paths removed."""
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[A-Za-z0-9_]+(?:\.(?P<pid>\d+)@(?P<host>[^/@]*))?\.tmp")
    removed = []
    if not target.parent.is_dir():
        return removed
    for path in target.parent.iterdir():
        owner = pattern.fullmatch(path.name)
        if owner is None or not _is_stale(path, owner, foreign_age_s):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
