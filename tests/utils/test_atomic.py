import pytest

from hade.utils.atomic import atomic_dir, atomic_path, recover_dir, write_json_atomic


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
