import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hade.utils.atomic import atomic_dir, atomic_path, recover_dir, remove_stale_temps, write_json_atomic

# A write killed half-way: the process dies inside atomic_dir, as under SIGKILL (no clean-up runs).
KILLED_WRITE = """
import os, sys
from hade.utils.atomic import atomic_dir
with atomic_dir(sys.argv[1]) as tmp:
    (tmp / "model.safetensors").write_bytes(b"x" * 1000)
    os._exit(9)
"""


def killed_write(target: Path) -> Path:
    """Run a write of `target` that is killed half-way; returns the temporary it left behind."""
    before = set(target.parent.iterdir()) if target.parent.exists() else set()
    subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target)], check=False)
    (left,) = set(target.parent.iterdir()) - before
    return left


def test_failed_write_keeps_old_file(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{")
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_dir_replaces_and_recovers(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("2")
    assert (target / "x").read_text() == "2"
    # a crash between the two renames leaves only the .old copy: recover_dir puts it back
    target.rename(tmp_path / ".ckpt.old")
    recover_dir(target)
    assert (target / "x").read_text() == "2"


def test_temporaries_of_killed_writes_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("1")
    dead = killed_write(target)
    assert dead.name.startswith(".ckpt.") and dead.name.endswith(".tmp") and (dead / "model.safetensors").exists()
    other_host = tmp_path / ".ckpt.abcd1234.4242@another-host.tmp"
    other_host.mkdir()
    legacy_old, legacy_new = tmp_path / ".ckpt.oldstyle.tmp", tmp_path / ".ckpt.newstyle.tmp"
    legacy_old.write_text("from before owners were recorded")
    legacy_new.write_text("")
    os.utime(legacy_old, (time.time() - 2 * 86400,) * 2)
    # temporaries of other targets ("ckpt2", "ckpt.json") and other files are not touched
    unrelated = [tmp_path / ".ckpt2.abcd1234.1@h.tmp", tmp_path / ".ckpt.json.abcd1234.tmp", tmp_path / "ckpt.tmp"]
    for path in unrelated:
        path.write_text("")
    with atomic_dir(target) as live:  # a write in progress (this process) is never touched
        assert sorted(remove_stale_temps(target)) == sorted([dead, legacy_old])
        assert live.exists() and other_host.exists() and legacy_new.exists()
        (live / "x").write_text("2")
    assert sorted(remove_stale_temps(target, foreign_age_s=0)) == sorted([other_host, legacy_new])
    assert all(p.exists() for p in unrelated) and (target / "x").read_text() == "2"


def test_recover_dir_removes_temporaries_of_killed_writes(tmp_path):
    target = tmp_path / "ckpt"
    dead_dir = killed_write(target)
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "ckpt") as tmp:  # a file temporary of the same target, of a live writer
            tmp.write_text("half")
            recover_dir(target)
            assert tmp.exists()
            raise RuntimeError("stop")
    assert dead_dir.exists() is False
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_is_readable_by_others(tmp_path):
    from hade.utils.atomic import atomic_dir

    with atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "a.txt").write_text("x")
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o755
