"""Any file name the file system allows is indexed and served: names that are not UTF-8 (Latin-1 bytes),
in files and in folders."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

LATIN1_FILE = b"n\xe4me.wav"
LATIN1_DIR = b"f\xf6lder"


@pytest.fixture
def latin1_folder(audio_folder: Path, tmp_path: Path) -> Path:
    """A copy of the serve test folder with one file renamed to a Latin-1 name and one moved into a
    Latin-1 folder."""
    if os.fsencode("x") != b"x" or not hasattr(os, "fsencode"):
        pytest.skip("needs a POSIX file system")
    folder = tmp_path / "sounds"
    shutil.copytree(audio_folder, folder)
    wavs = sorted(folder.rglob("*.wav"))
    first, second = os.fsencode(wavs[0]), os.fsencode(wavs[1])
    os.rename(first, os.path.join(os.path.dirname(first), LATIN1_FILE))
    os.mkdir(os.path.join(os.fsencode(folder), LATIN1_DIR))
    os.rename(second, os.path.join(os.fsencode(folder), LATIN1_DIR, b"x.wav"))
    return folder


def test_non_utf8_names_are_indexed_searched_and_served(latin1_folder, serve_model, tmp_path, real_index_fn,
                                                        local_client, capsys):
    from hade.cli import main
    from hade.serve.app import create_app

    index = real_index_fn(latin1_folder, serve_model, tmp_path)
    try:
        names = sorted(index.paths.values())
        weird = [p for p in names if "\udce4" in p or "\udcf6" in p]
        assert len(weird) == 2 and index.unreadable == 0
        assert any(os.fsencode(p).endswith(LATIN1_FILE) for p in weird)
        assert any(os.fsencode(p).startswith(LATIN1_DIR + b"/") for p in weird)
        with local_client(create_app(index)) as c:
            r = c.get("/search", params={"q": "a dog barks", "k": 100})
            assert r.status_code == 200
            body = json.loads(r.content.decode("utf-8"))  # strict UTF-8
            hits = body["results"] if isinstance(body, dict) else body
            shown = {h["path"]: h["id"] for h in hits}
            assert any(p.endswith("n\\xe4me.wav") for p in shown) and any(p.startswith("f\\xf6lder/") for p in shown)
            for path, window_id in shown.items():
                if "\\x" in path:
                    audio = c.get(f"/audio/{window_id}")
                    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
            latin1 = next(p for p in weird if os.fsencode(p).endswith(LATIN1_FILE))
            os.utime(os.path.join(os.fsencode(latin1_folder), os.fsencode(latin1)), ns=(1, 1))
            window_id = next(i for p, i in shown.items() if p.endswith("n\\xe4me.wav"))
            r = c.get(f"/audio/{window_id}")  # changed since indexed: an error naming it, in valid JSON
            assert r.status_code == 409 and "n\\xe4me.wav" in json.loads(r.content.decode("utf-8"))["error"]
        capsys.readouterr()
        assert main(["search", str(index.path), "a dog barks", "-k", "100", "--json"]) == 0
        out = capsys.readouterr().out
        out.encode("utf-8")  # no surrogates left in what is printed
        assert "n\\\\xe4me.wav" in out
    finally:
        index.close()
