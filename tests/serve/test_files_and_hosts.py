"""Issue 12 (serve): only indexed, unchanged files are served; HEAD; the Host check; damaged indexes."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from hade.serve.app import create_app
from hade.serve.guards import allowed_host_patterns, host_name

SECRET = b"root:x:0:0:shadow-like secret\n" * 50


def real_index_has_open_audio() -> bool:
    try:
        from hade.index.search import Index
    except ImportError:
        return False
    return hasattr(Index, "open_audio")


def _copy(audio_folder: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "sounds"
    shutil.copytree(audio_folder, folder)
    return folder


@pytest.fixture(params=["fake", "real"])
def private_index(request, audio_folder, serve_model, tmp_path, fake_index_cls, real_index_fn):
    folder = _copy(audio_folder, tmp_path)
    if request.param == "fake":
        return fake_index_cls(folder, serve_model), folder
    if not real_index_has_open_audio():
        pytest.skip("hade.index.Index.open_audio is not there yet")
    return real_index_fn(folder, serve_model, tmp_path), folder


def first_wav_window(index: Any) -> tuple[int, str]:
    """(window id, relative path) of some window of the index."""
    hit = index.search("a dog barks", k=1)[0]
    return int(hit.id), str(hit.path)


def assert_json_error(r, status: int) -> str:
    assert r.status_code == status, r.text[:300]
    assert r.headers["content-type"].startswith("application/json")
    return r.json()["error"]


# ---- serve only what was indexed ------------------------------------------------------------------
def test_symlink_swap_to_outside_is_409_without_bytes(private_index, local_client, tmp_path):
    index, folder = private_index
    wid, rel = first_wav_window(index)
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)
    target = folder / rel
    target.unlink()
    target.symlink_to(secret)
    with local_client(create_app(index)) as c:
        for method in ("GET", "HEAD"):
            r = c.request(method, f"/audio/{wid}")
            assert r.status_code == 409
            assert b"root:" not in r.content
        r = c.get(f"/peaks/{wid}")  # the envelope is of indexed files only, too
        assert r.status_code == 409 and r.json()["reason"] == "outside"
        message = assert_json_error(c.get(f"/audio/{wid}"), 409)
        assert c.get(f"/audio/{wid}").json()["reason"] == "outside"
        assert str(tmp_path) not in message and str(folder) not in message  # no server paths
        assert Path(rel).name in message


def test_symlink_to_another_indexed_file_is_409(private_index, local_client):
    index, folder = private_index
    wid, rel = first_wav_window(index)
    other = next(p for p in sorted(folder.rglob("*.wav")) if p.relative_to(folder).as_posix() != rel)
    with open(other, "ab") as f:  # make sure the size differs from the indexed file's
        f.write(b"\0" * 10)
    (folder / rel).unlink()
    (folder / rel).symlink_to(other)
    with local_client(create_app(index)) as c:
        r = c.get(f"/audio/{wid}")
        assert "hade index" in assert_json_error(r, 409)
        assert r.json()["reason"] == "changed"


def test_changed_file_is_409_and_missing_is_404(private_index, local_client):
    index, folder = private_index
    wid, rel = first_wav_window(index)
    with local_client(create_app(index)) as c:
        assert c.get(f"/audio/{wid}").status_code == 200
        assert c.get(f"/peaks/{wid}").status_code == 200
        with open(folder / rel, "ab") as f:
            f.write(b"\0" * 100)
        assert "hade index" in assert_json_error(c.get(f"/audio/{wid}"), 409)
        assert "hade index" in assert_json_error(c.get(f"/peaks/{wid}"), 409)  # not from the cache either
        (folder / rel).unlink()
        r = c.get(f"/audio/{wid}")
        assert_json_error(r, 404)
        assert r.json()["reason"] == "missing"
        assert assert_json_error(c.get(f"/peaks/{wid}"), 404)


def test_head_audio_has_headers_and_no_body(client, serve_index):
    hit = client.get("/search", params={"q": "a dog barks"}).json()["results"][0]
    get = client.get(hit["audio_url"])
    head = client.head(hit["audio_url"])
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    for name in ("etag", "content-type", "accept-ranges", "last-modified"):
        assert head.headers[name] == get.headers[name]
    ranged = client.head(hit["audio_url"], headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.content == b""
    assert ranged.headers["content-length"] == "10"
    assert ranged.headers["content-range"] == f"bytes 0-9/{len(get.content)}"


# ---- Host header ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value, host", [
    ("localhost", "localhost"), ("LOCALHOST:8000", "localhost"), ("127.0.0.1:1", "127.0.0.1"),
    ("[::1]:8000", "::1"), ("[::1]", "::1"), ("[0:0::1]", "::1"), ("example.com.", "example.com"),
    ("", None), ("::1", None), ("host:port", None), ("[::1", None), ("a:1:2", None),
])
def test_host_name(value, host):
    assert host_name(value) == host


def test_host_policy():
    loopback = allowed_host_patterns()
    for ok in ("localhost", "localhost:8000", "127.0.0.1", "127.9.8.7:80", "[::1]:8000"):
        assert loopback.allows(ok), ok
    for bad in ("evil.example", "evil.example:8000", "localhost.evil.example", "0.0.0.0", "10.0.0.1", None,
                "", "127.0.0.1.evil.example", "[::2]"):
        assert not loopback.allows(bad), bad
    bound = allowed_host_patterns(["MyHost.lan"], bound_host="192.168.1.5")
    assert bound.allows("myhost.lan:8000") and bound.allows("192.168.1.5:8000") and not bound.allows("evil.example")
    assert not allowed_host_patterns(bound_host="0.0.0.0").allows("0.0.0.0")
    assert allowed_host_patterns(["*"]).allows("evil.example")


def test_foreign_host_is_400_everywhere(app, serve_index, local_client):
    wid = next(iter(serve_index.search("a dog", k=1))).id
    with local_client(app) as c:
        for url in ("/search?q=dog", f"/audio/{wid}", f"/peaks/{wid}", f"/explain/{wid}?q=dog", "/health", "/",
                    "/static/app.js"):
            r = c.get(url, headers={"Host": "evil.example"})
            assert "evil.example" in assert_json_error(r, 400), url
            assert b"RIFF" not in r.content and b"windows" not in r.content
        r = c.post("/search/audio", headers={"Host": "evil.example"}, files={"file": ("a.wav", b"x", "audio/wav")})
        assert_json_error(r, 400)
        for host in ("localhost:8000", "127.0.0.1", "127.0.0.1:8000", "[::1]:8000"):
            assert c.get("/search?q=dog", headers={"Host": host}).status_code == 200, host
            assert c.get(f"/audio/{wid}", headers={"Host": host}).status_code == 200, host
            assert c.get("/health", headers={"Host": host}).status_code == 200, host


def test_allowed_host_adds_a_name(serve_index, local_client):
    with local_client(create_app(serve_index, allowed_hosts=["search.lan"])) as c:
        assert c.get("/health", headers={"Host": "search.lan:8000"}).status_code == 200
        assert c.get("/health", headers={"Host": "localhost"}).status_code == 200
        assert_json_error(c.get("/health", headers={"Host": "evil.example"}), 400)
    with local_client(create_app(serve_index, allowed_hosts=["*"])) as c:
        assert c.get("/health", headers={"Host": "evil.example"}).status_code == 200


def test_live_server_checks_host(live_server):
    import httpx

    assert httpx.get(f"{live_server.url}/health").status_code == 200  # Host: 127.0.0.1:PORT
    r = httpx.get(f"{live_server.url}/health", headers={"Host": "evil.example"})
    assert r.status_code == 400 and "evil.example" in r.json()["error"]
    assert httpx.get(f"http://localhost:{live_server.port}/health").status_code == 200


# ---- damaged index --------------------------------------------------------------------------------
def test_damaged_index_is_503_and_degraded(fake_index_cls, audio_folder, serve_model, local_client):
    index = fake_index_cls(audio_folder, serve_model)
    with local_client(create_app(index)) as c:
        assert c.get("/health").json()["status"] == "ok"
        index.damaged = "arrays/c000001/embed.npy"
        message = assert_json_error(c.get("/search", params={"q": "dog"}), 503)
        assert "arrays/c000001/embed.npy" in message and "hade index" in message
        r = c.post("/search/audio", files={"file": ("q.wav", wav(), "audio/wav")})
        assert "embed.npy" in assert_json_error(r, 503)
        r = c.get("/health")
        assert r.status_code == 503
        h = r.json()
        assert h["status"] == "degraded" and h["problems"][0]["file"] == "arrays/c000001/embed.npy"
        assert h["repair"].startswith("hade index") and "embed.npy" in h["error"] and "hade index" in h["error"]
        index.damaged = None
        assert c.get("/search", params={"q": "dog"}).status_code == 200
        assert c.get("/health").json()["status"] == "ok"


def test_health_survives_a_failing_check(fake_index_cls, audio_folder, serve_model, local_client):
    index = fake_index_cls(audio_folder, serve_model)

    def broken() -> Any:
        raise OSError("disk gone")

    index.health = broken
    with local_client(create_app(index)) as c:
        r = c.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "degraded"


def test_health_reads_a_check_that_breaks_its_contract_as_degraded(fake_index_cls, audio_folder, serve_model,
                                                                    local_client):
    """An index whose health() answers a plain dict (not hade.index.Health) is not trusted to be ok."""
    index = fake_index_cls(audio_folder, serve_model)
    index.health = lambda: {"status": "ok", "problems": [], "repair": None}
    with local_client(create_app(index)) as c:
        body = c.get("/health").json()
        assert body["status"] == "degraded" and "check failed" in body["error"]
        assert body["index"]["files"] == body["files"] > 0 and "root" not in body["index"]


def wav(seconds: float = 0.6, sr: int = 8000) -> bytes:
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, 0.1 * np.random.default_rng(0).standard_normal(int(seconds * sr)), sr, format="WAV")
    return buf.getvalue()


def _truncate_a_chunk(index_dir: Path) -> Path:
    chunk = sorted((index_dir / "arrays").rglob("*.npy"))[0]
    with open(chunk, "r+b") as f:
        f.truncate(100)
    return chunk


def test_real_damaged_index_is_503_degraded_and_refused_at_start(audio_folder, serve_model, tmp_path,
                                                                 real_index_fn, local_client, monkeypatch, capsys):
    if not real_index_has_open_audio():
        pytest.skip("hade.index.Index.health is not there yet")
    import uvicorn

    from hade.cli import main

    index = real_index_fn(_copy(audio_folder, tmp_path), serve_model, tmp_path)
    with local_client(create_app(index)) as c:
        assert c.get("/health").json()["status"] == "ok"
        chunk = _truncate_a_chunk(index.path)
        r = c.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "degraded"
        assert chunk.name in r.json()["error"] and "hade index" in r.json()["repair"]
        r = c.get("/search", params={"q": "a dog barks", "k": 100}, headers={"Host": "localhost"})
        message = assert_json_error(r, 503)
        assert chunk.name in message and "hade index" in message and "Traceback" not in r.text
    index.close()
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not start a server"))
    assert main(["serve", str(index.path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and chunk.name in err[0] and "hade index" in err[0]
