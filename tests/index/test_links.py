"""Serving only what was indexed: open_audio's checks, and symbolic links when indexing."""
from __future__ import annotations

import os
import shutil

import pytest

from hade.cli import main
from hade.errors import StaleFile
from hade.index import Index, build_index


@pytest.fixture
def built(fresh_data, dp_ckpt, tmp_path):
    """(folder, index dir) of a private copy of the SynthCaps folder, indexed."""
    out = tmp_path / "links.idx"
    build_index(fresh_data, out, dp_ckpt, batch_size=8, progress=False)
    return fresh_data, out


def window_of(ix: Index, rel: str) -> int:
    return next(int(w) for p, w in enumerate(ix.table["id"]) if ix.get(int(w)).path == rel)


def a_file(ix: Index) -> str:
    return ix.get(int(ix.table["id"][0])).path


def test_open_audio_returns_the_indexed_bytes(built):
    folder, out = built
    with Index.open(out) as ix:
        rel = a_file(ix)
        f, st = ix.open_audio(window_of(ix, rel))
        with f:
            assert f.read() == (folder / rel).read_bytes()
        assert st.st_size == (folder / rel).stat().st_size
        assert ix.audio_path(window_of(ix, rel)) == (folder / rel).resolve()
        with pytest.raises(KeyError):
            ix.open_audio(10**9)


def test_symlink_swap_to_a_file_outside_is_refused(built, tmp_path):
    folder, out = built
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"not for you")
    with Index.open(out) as ix:
        rel = a_file(ix)
        wid = window_of(ix, rel)
        (folder / rel).unlink()
        os.symlink(secret, folder / rel)
        for call in (ix.open_audio, ix.audio_path, ix.window_audio):
            with pytest.raises(StaleFile) as e:
                call(wid)
            assert e.value.reason == "outside" and rel in str(e.value) and str(tmp_path) not in str(e.value)


def test_changed_and_missing_files_are_refused(built):
    folder, out = built
    with Index.open(out) as ix:
        changed, missing = ix.get(int(ix.table["id"][0])).path, ix.get(int(ix.table["id"][-1])).path
        data = (folder / changed).read_bytes()
        (folder / changed).unlink()
        (folder / changed).write_bytes(data[:-2] + b"\x01\x02")  # same name, other bytes (and mtime)
        (folder / missing).unlink()
        with pytest.raises(StaleFile) as e:
            ix.open_audio(window_of(ix, changed))
        assert e.value.reason == "changed" and "hade index" in str(e.value)
        with pytest.raises(StaleFile) as e:
            ix.open_audio(window_of(ix, missing))
        assert e.value.reason == "missing" and str(folder) not in str(e.value)


def test_same_size_rewrite_with_new_mtime_is_changed(built):
    folder, out = built
    with Index.open(out) as ix:
        rel = a_file(ix)
        st = (folder / rel).stat()
        os.utime(folder / rel, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        with pytest.raises(StaleFile) as e:
            ix.open_audio(window_of(ix, rel))
        assert e.value.reason == "changed"


def test_symlinks_outside_are_skipped_unless_asked(fresh_data, dp_ckpt, synth_dir, tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    some = sorted(synth_dir.rglob("*.wav"))[:2]
    shutil.copy2(some[0], outside / "ext.wav")
    (outside / "sub").mkdir()
    shutil.copy2(some[1], outside / "sub" / "deep.wav")
    os.symlink(outside / "ext.wav", fresh_data / "link_out.wav")
    os.symlink(outside / "sub", fresh_data / "linked_dir")
    inside = sorted(p for p in fresh_data.rglob("*.wav") if not p.is_symlink())[0]
    os.symlink(inside, fresh_data / "link_in.wav")
    out = tmp_path / "l.idx"

    stats = build_index(fresh_data, out, dp_ckpt, batch_size=8, progress=False)
    skipped = {s.path: s.reason for s in stats.skipped}
    assert set(skipped) == {"link_out.wav", "linked_dir/"}
    assert all("--follow-external-links" in r for r in skipped.values())
    with Index.open(out) as ix:
        paths = set(ix.paths.values())
        assert "link_in.wav" in paths and "link_out.wav" not in paths
        assert not any(p.startswith("linked_dir") for p in paths)
        f, _ = ix.open_audio(window_of(ix, "link_in.wav"))  # resolves inside: served
        f.close()

    capsys.readouterr()
    assert main(["index", str(fresh_data), "--out", str(out), "--quiet", "--follow-external-links"]) == 0
    assert "skipped link_out.wav" not in capsys.readouterr().err
    with Index.open(out) as ix:
        paths = set(ix.paths.values())
        assert {"link_out.wav", "linked_dir/deep.wav"} <= paths and ix.follow_external_links
        f, _ = ix.open_audio(window_of(ix, "link_out.wav"))  # an index that asked for them serves them
        with f:
            assert f.read() == (outside / "ext.wav").read_bytes()

    assert main(["index", str(fresh_data), "--out", str(out), "--quiet"]) == 0  # without the flag: they leave
    captured = capsys.readouterr()
    assert "skipped link_out.wav: symbolic link to a file outside" in captured.err
    assert "skipped linked_dir/: symbolic link to a folder outside" in captured.err and "2 removed" in captured.out
    with Index.open(out) as ix:
        assert "link_out.wav" not in set(ix.paths.values())


def test_index_without_follow_refuses_a_file_that_became_an_external_link(built, tmp_path):
    folder, out = built
    with Index.open(out) as ix:
        rel = a_file(ix)
        wid = window_of(ix, rel)
        moved = tmp_path / "moved.wav"
        shutil.move(folder / rel, moved)  # same bytes, same mtime, now outside
        os.symlink(moved, folder / rel)
        with pytest.raises(StaleFile) as e:
            ix.open_audio(wid)
        assert e.value.reason == "outside"


def test_link_cycles_are_walked_once(fresh_data, dp_ckpt, tmp_path):
    os.symlink(fresh_data, fresh_data / "loop")  # inside: never descended
    stats = build_index(fresh_data, tmp_path / "c.idx", dp_ckpt, batch_size=8, progress=False,
                        follow_external_links=True)
    assert stats.files == 24 and stats.skipped == []


def test_a_link_swapped_in_after_resolving_is_not_followed(built, monkeypatch):
    """open_audio opens the resolved path with O_NOFOLLOW: a symlink that appears there between resolving
    and opening (simulated by a realpath that returns the link itself) is refused, not followed."""
    folder, out = built
    with Index.open(out) as ix:
        rel = a_file(ix)
        wid = window_of(ix, rel)
        target = folder / rel
        kept = target.with_name("kept.bin")
        target.rename(kept)
        target.symlink_to(kept)  # inside the folder, same bytes: only O_NOFOLLOW can refuse it
        real = os.path.realpath
        monkeypatch.setattr(os.path, "realpath", lambda p: os.fspath(p) if os.fspath(p) == str(target) else real(p))
        with pytest.raises(StaleFile) as e:
            ix.open_audio(wid)
        assert e.value.reason == "changed"
