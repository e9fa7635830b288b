"""Same-size damage of an index file met by a request: 503 naming the file and the repair command, and
/health degraded listing it; never a result computed from the damaged bytes."""
from __future__ import annotations

import shutil
from pathlib import Path

from hade.serve.app import create_app


def test_same_size_damage_is_503_and_degraded(audio_folder, serve_model, tmp_path, real_index_fn, local_client):
    from hade.index import checksums

    folder = tmp_path / "sounds"
    shutil.copytree(audio_folder, folder)
    checksums.forget()
    index = real_index_fn(folder, serve_model, tmp_path)
    try:
        chunk = sorted(Path(index.path, "arrays").rglob("*.npy"))[0]
        rel = chunk.relative_to(index.path).as_posix()
        size = chunk.stat().st_size
        with open(chunk, "r+b") as f:  # flipped bytes at the end: the size stays
            f.seek(size - 32)
            f.write(b"\x7f" * 32)
        with local_client(create_app(index)) as c:
            r = c.get("/search", params={"q": "a dog barks", "k": 100})
            assert r.status_code == 503 and "results" not in r.json()
            error = r.json()["error"]
            assert rel in error and "repair with `hade index" in error and "\n" not in error
            h = c.get("/health")
            assert h.status_code == 503 and h.json()["status"] == "degraded"
            assert rel in [p["file"] for p in h.json()["problems"]] and h.json()["repair"].startswith("hade index")
    finally:
        index.close()
        checksums.forget()
