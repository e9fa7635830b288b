"""`hade serve` HTTP API through FastAPI's TestClient: results, bounds, JSON errors, audio + Range, explain."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from hade.serve.app import create_app
from hade.serve.files import Unsatisfiable, parse_range


def first_hit(client: TestClient, q: str = "a dog barks", **params) -> dict:
    r = client.get("/search", params={"q": q, **params})
    assert r.status_code == 200, r.text
    return r.json()["results"][0]


def assert_json_error(r, status: int) -> str:
    assert r.status_code == status, r.text[:300] if "json" in r.headers.get("content-type", "") else r.headers
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


# ---- search ---------------------------------------------------------------------------------------
def test_health(client, serve_index):
    r = client.get("/health")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok"
    assert h["windows"] == len(serve_index)
    assert h["head"] == serve_index.model.config.head
    assert isinstance(h["model_fingerprint"], str) and len(h["model_fingerprint"]) >= 16
    assert h["sample_rate"] == serve_index.model.sample_rate
    assert client.get("/health").json()["model_fingerprint"] == h["model_fingerprint"]  # cached, stable


def test_search_text(client, serve_index):
    r = client.get("/search", params={"q": "  a dog barks ", "k": 5})
    assert r.status_code == 200
    body = r.json()
    assert body["query"] == "a dog barks" and body["k"] == 5
    results = body["results"]
    assert 1 <= len(results) <= 5
    for hit in results:
        assert set(hit) == {"id", "path", "start", "end", "score", "audio_url"}
        assert hit["audio_url"] == f"/audio/{hit['id']}"
        assert 0 <= hit["start"] < hit["end"]
        assert not Path(hit["path"]).is_absolute()
        assert serve_index.get(hit["id"]).path == hit["path"]
    scores = [h["score"] for h in results]
    assert scores == sorted(scores, reverse=True)


def test_search_reports_server_timing(client, serve_index):
    r = client.get("/search", params={"q": "a dog barks", "k": 3})
    parts = dict(p.strip().split(";dur=") for p in r.headers["server-timing"].split(","))
    assert {"queue", "search", "handler"} <= set(parts)
    ms = {name: float(v) for name, v in parts.items()}
    assert all(v >= 0 for v in ms.values()) and ms["handler"] >= ms["search"]
    if not hasattr(serve_index, "windows"):  # the real index also splits its search into phases
        assert {"encode", "score", "hits"} <= set(parts)


def test_search_per_file(client):
    results = client.get("/search", params={"q": "rain", "k": 100, "per_file": "true"}).json()["results"]
    paths = [h["path"] for h in results]
    assert len(paths) == len(set(paths)) > 1


@pytest.mark.parametrize("params", [
    {"q": "x", "k": 0}, {"q": "x", "k": 101}, {"q": "x", "k": "ten"}, {"q": "x", "per_file": "maybe"},
    {"q": ""}, {"q": "a" * 501}, {},
])
def test_search_bounds_are_422_json(client, params):
    message = assert_json_error(client.get("/search", params=params), 422)
    assert "k" in message or "q" in message or "per_file" in message


def test_search_blank_query_is_400(client):
    assert "empty" in assert_json_error(client.get("/search", params={"q": "   "}), 400)


def test_k_bounds_inclusive(client):
    assert len(client.get("/search", params={"q": "x", "k": 1}).json()["results"]) == 1
    assert client.get("/search", params={"q": "x", "k": 100}).status_code == 200
    assert client.get("/search", params={"q": "a" * 500}).status_code == 200


def test_unknown_route_and_method_are_json(client):
    assert_json_error(client.get("/nope"), 404)
    assert_json_error(client.post("/search", params={"q": "x"}), 405)
    assert_json_error(client.get("/static/nope.js"), 404)


def test_security_headers_and_page(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="search-form"' in r.text and 'id="q"' in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    for asset in ("/static/app.js", "/static/heatmap.js", "/static/plots.js", "/static/style.css"):
        a = client.get(asset)
        assert a.status_code == 200 and len(a.text) > 100
    page = r.text + "".join(client.get(f"/static/{n}").text for n in ("app.js", "heatmap.js", "plots.js", "style.css"))
    assert "http://" not in page and "https://" not in page and "//cdn" not in page  # offline page


# ---- audio ----------------------------------------------------------------------------------------
def test_audio_whole_file(client, serve_index):
    hit = first_hit(client)
    r = client.get(hit["audio_url"])
    assert r.status_code == 200
    assert r.headers["content-type"] == "audio/wav"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.content == Path(serve_index.audio_path(hit["id"])).read_bytes()


def test_audio_range_requests(client, serve_index):
    hit = first_hit(client)
    data = Path(serve_index.audio_path(hit["id"])).read_bytes()
    size = len(data)
    r = client.get(hit["audio_url"], headers={"Range": "bytes=10-109"})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 10-109/{size}"
    assert r.content == data[10:110]
    r = client.get(hit["audio_url"], headers={"Range": "bytes=100-"})  # what <audio> sends to seek
    assert r.status_code == 206 and r.content == data[100:]
    r = client.get(hit["audio_url"], headers={"Range": "bytes=-50"})
    assert r.status_code == 206 and r.content == data[-50:]
    r = client.get(hit["audio_url"], headers={"Range": f"bytes={size}-"})
    assert_json_error(r, 416)
    assert r.headers["content-range"] == f"bytes */{size}"
    r = client.get(hit["audio_url"], headers={"Range": "bytes=0-1,5-9"})  # multi-range: ignored
    assert r.status_code == 200 and r.content == data
    etag = client.get(hit["audio_url"]).headers["etag"]
    r = client.get(hit["audio_url"], headers={"Range": "bytes=0-9", "If-Range": etag})
    assert r.status_code == 206 and r.content == data[:10]
    r = client.get(hit["audio_url"], headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == data


def test_parse_range():
    assert parse_range(None, 100) is None
    assert parse_range("bytes=0-", 100) == (0, 99)
    assert parse_range("bytes=90-200", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=-1000", 100) == (0, 99)
    assert parse_range("items=0-5", 100) is None
    assert parse_range("bytes=5-2", 100) is None
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=100-", 100)
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=-0", 100)


@pytest.mark.parametrize("url, status", [
    ("/audio/0", 404), ("/audio/-1", 404), ("/audio/99999999", 404), ("/audio/99999999999999999999999", 404),
    ("/audio/1.5", 422), ("/audio/abc", 422), ("/audio/..%2F..%2Fetc%2Fpasswd", 404),
    ("/audio/%2Fetc%2Fpasswd", 404), ("/audio/", 404), ("/static/..%2F..%2Fapp.py", 404),
    ("/static/%2E%2E/app.py", 404),
])
def test_audio_only_by_known_id(client, url, status):
    r = client.get(url)
    assert_json_error(r, status)
    assert b"root:" not in r.content and b"create_app" not in r.content


# ---- audio upload ---------------------------------------------------------------------------------
def wav_bytes(seconds: float = 0.7, sr: int = 16000, channels: int = 2, fmt: str = "WAV") -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    sf.write(buf, 0.1 * rng.standard_normal((int(seconds * sr), channels)), sr, format=fmt)
    return buf.getvalue()


def test_search_by_audio(client):
    files = {"file": ("query.wav", wav_bytes(), "audio/wav")}
    r = client.post("/search/audio", files=files, params={"k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "query.wav" and len(body["results"]) == 3
    r = client.post("/search/audio", files={"file": ("q.flac", wav_bytes(fmt="FLAC", channels=1), "audio/flac")})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("payload", [b"", b"not audio at all" * 10, b"RIFF\x00\x00\x00\x00WAVEfmt "])
def test_search_by_bad_audio_is_400(client, payload):
    r = client.post("/search/audio", files={"file": ("bad.wav", payload, "audio/wav")})
    message = assert_json_error(r, 400)
    assert "audio" in message or "empty" in message


def test_search_by_audio_bounds(client):
    assert_json_error(client.post("/search/audio"), 422)  # no file field
    files = {"file": ("query.wav", wav_bytes(), "audio/wav")}
    assert_json_error(client.post("/search/audio", files=files, params={"k": 0}), 422)
    silent = io.BytesIO()
    sf.write(silent, np.full(800, np.nan, dtype=np.float32), 8000, format="WAV", subtype="FLOAT")
    r = client.post("/search/audio", files={"file": ("nan.wav", silent.getvalue(), "audio/wav")})
    assert "non-finite" in assert_json_error(r, 400)


def test_upload_size_limit(serve_index, local_client):
    small = create_app(serve_index, max_upload_bytes=4000)
    with local_client(small) as c:
        big = wav_bytes(seconds=3.0, sr=16000, channels=1)  # 96 kB > 4000 + 64 kB multipart allowance
        r = c.post("/search/audio", files={"file": ("big.wav", big, "audio/wav")})
        assert_json_error(r, 413)

        def chunks():  # no Content-Length: the limit is enforced while streaming
            for _ in range(40):
                yield b"x" * 4096

        r = c.post("/search/audio", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert_json_error(r, 413)
        # a file over the upload limit but within the multipart allowance is still refused
        r = c.post("/search/audio", files={"file": ("mid.wav", wav_bytes(0.3, 8000, 1), "audio/wav")})
        assert "larger than 4000" in assert_json_error(r, 413)


# ---- explain --------------------------------------------------------------------------------------
def test_explain_shapes(client, serve_index):
    hit = first_hit(client, "a dog barks loudly")
    r = client.get(f"/explain/{hit['id']}", params={"q": "a dog barks loudly"})
    assert r.status_code == 200, r.text
    e = r.json()
    assert e["id"] == hit["id"] and e["path"] == hit["path"] and e["start"] == pytest.approx(hit["start"])
    words = e["words"]
    assert words == ["a", "dog", "barks", "loudly"]  # word pieces ("bark" "##s") shown as words
    assert sum(e["pieces"], []) == serve_index.model.tokenizer.tokenize("a dog barks loudly")
    assert len(e["levels"]) >= 1
    for lv in e["levels"]:
        assert lv["audio_name"] == f"HTSAT stage {lv['audio_stage']}"  # the encoders' own names
        assert lv["text_name"] == f"BERT block {lv['text_block']}"
        edges = np.asarray(lv["time_edges"])
        t = edges.shape[0] - 1
        assert t >= 1 and np.all(np.diff(edges) > 0)
        assert edges[0] == pytest.approx(hit["start"], abs=1e-6)  # file time, not window time
        assert edges[-1] == pytest.approx(hit["start"] + e["clip_seconds"], abs=1e-3)
        for key in ("text_to_audio", "audio_to_text"):
            m = np.asarray(lv[key], dtype=float)
            assert m.shape == (len(words), t)
        t2a = np.asarray(lv["text_to_audio"], dtype=float)
        assert np.allclose(np.nansum(t2a, axis=0)[~np.isnan(t2a).all(0)], 1.0, atol=1e-4)
        assert len(lv["bin_tokens"]) == t
        assert lv["level_score"] == pytest.approx(lv["text_enhanced"] + lv["audio_enhanced"])
    assert len(e["factor_similarity"]) == 4 and len(e["confidence"]) == 4
    assert isinstance(e["score"], float)


def test_explain_errors(client):
    hit = first_hit(client)
    assert "exactly one" in assert_json_error(client.get(f"/explain/{hit['id']}"), 400)
    assert "exactly one" in assert_json_error(client.get(f"/explain/{hit['id']}", params={"q": "dog", "like": 1}), 400)
    assert_json_error(client.get(f"/explain/{hit['id']}", params={"q": ""}), 422)
    assert_json_error(client.get(f"/explain/{hit['id']}", params={"q": "a" * 501}), 422)
    assert_json_error(client.get(f"/explain/{hit['id']}", params={"q": "  "}), 400)
    assert_json_error(client.get("/explain/0", params={"q": "dog"}), 404)
    assert_json_error(client.get("/explain/abc", params={"q": "dog"}), 422)
    assert_json_error(client.get(f"/explain/{hit['id']}", params={"like": 0}), 404)
    assert "search with the clip again" in assert_json_error(
        client.get(f"/explain/{hit['id']}", params={"audio": "not-a-query"}), 404)


def assert_curve_of_the_file(e: dict, hit: dict, serve_index) -> None:
    """The curve covers every window of the hit's file in time order and marks the hit's window."""
    curve = e["curve"]
    same_file = [w for w in (serve_index.get(i) for i in range(1, len(serve_index) + 2)
                             if _has(serve_index, i)) if w.path == hit["path"]]
    assert len(curve["start"]) == len(curve["end"]) == len(curve["score"]) == len(same_file) >= 1
    assert curve["start"] == sorted(curve["start"])
    m = curve["matched"]
    assert curve["start"][m] == pytest.approx(hit["start"]) and curve["end"][m] == pytest.approx(hit["end"])
    assert curve["score"][m] == pytest.approx(hit["score"], abs=1e-5) == e["stored_score"]


def _has(index, i: int) -> bool:
    try:
        index.get(i)
        return True
    except (KeyError, LookupError):
        return False


def test_explain_dp_gives_the_curve_over_the_file(dp_index, local_client):
    """A dp head (every converted CLAP model) has no maps: the answer is the query's score over the file."""
    with local_client(create_app(dp_index)) as c:
        hit = first_hit(c, "a dog barks")
        r = c.get(f"/explain/{hit['id']}", params={"q": "a dog barks"})
        assert r.status_code == 200, r.text
        e = r.json()
        assert e["head"] == "dp" and e["levels"] == [] and e["words"] == [] and e["query_kind"] == "text"
        assert "no word × time map" in e["note"]
        assert e["score"] == pytest.approx(hit["score"], abs=1e-5)
        assert_curve_of_the_file(e, hit, dp_index)


def test_explain_follows_audio_and_similar_queries(client, serve_index):
    """"Why?" after an audio upload or "Similar sounds" explains that query, not a text."""
    body = client.post("/search/audio", files={"file": ("query.wav", wav_bytes(), "audio/wav")},
                       params={"k": 3}).json()
    assert isinstance(body["query_id"], str) and len(body["query_id"]) >= 12
    for hit in body["results"]:
        e = client.get(f"/explain/{hit['id']}", params={"audio": body["query_id"]}).json()
        assert e["query_kind"] == "audio" and e["query"] == "the uploaded clip" and e["levels"] == []
        assert "audio vector" in e["note"] and "no word × time maps" in e["note"]
        assert e["score"] == pytest.approx(hit["score"], abs=1e-5)
        assert_curve_of_the_file(e, hit, serve_index)
    like = first_hit(client)
    for hit in client.get(f"/similar/{like['id']}", params={"k": 3}).json()["results"]:
        e = client.get(f"/explain/{hit['id']}", params={"like": like["id"]}).json()
        assert e["query_kind"] == "like" and like["path"] in e["query"]
        assert e["score"] == pytest.approx(hit["score"], abs=1e-5)
        assert_curve_of_the_file(e, hit, serve_index)


@pytest.fixture(scope="module")
def exact_app(audio_folder, serve_model, tmp_path_factory):
    """An index of float32 tokens without a token codec, windows as long as the model's clip (2.05 s), so
    every 1 s file is one zero-padded window."""
    from hade.checkpoint import save_model
    from hade.index import Index, build_index

    work = tmp_path_factory.mktemp("exact-index")
    save_model(serve_model, work / "ckpt")
    build_index(audio_folder, work / "index", ckpt=work / "ckpt", token_codec="none", storage_dtype="float32",
                progress=False)
    index = Index.open(work / "index")
    assert index.meta.window_samples > 1.5 * serve_model.sample_rate  # longer than the files
    return create_app(index), index


def test_explained_score_is_the_score_the_window_was_ranked_by(exact_app, local_client):
    """The window is explained at the index's window length, zero-padded as it was indexed: the explained
    score equals the hit's. Tolerance 1e-5 with float32 tokens and no token codec (the index encoded its
    windows in a batch, the explanation one window: float32 rounding only). An index of float16 tokens
    (the default) or with a token codec ranks by rounded or quantised tokens, so there the two differ by
    that rounding; the page then shows both."""
    app, index = exact_app
    with local_client(app) as c:
        hits = c.get("/search", params={"q": "a dog barks loudly", "k": 4}).json()["results"]
        for hit in hits:
            e = c.get(f"/explain/{hit['id']}", params={"q": "a dog barks loudly"}).json()
            assert e["audio_seconds"] < e["clip_seconds"]  # the file is shorter than the window: padded
            assert e["clip_seconds"] == pytest.approx(index.meta.window_samples / index.meta.sample_rate)
            assert e["score"] == pytest.approx(hit["score"], abs=1e-5)
            assert e["stored_score"] == pytest.approx(hit["score"], abs=1e-6)
            assert len(e["levels"]) == 3


# ---- waveform envelopes ----------------------------------------------------------------------------
def test_peaks_envelope_of_the_indexed_file(client, app, serve_index):
    hit = first_hit(client)
    r = client.get(f"/peaks/{hit['id']}")
    assert r.status_code == 200 and r.headers["cache-control"].startswith("private")
    body = r.json()
    data, sr = sf.read(serve_index.audio_path(hit["id"]), dtype="float32", always_2d=True)
    mono = data.mean(1)
    peaks = np.asarray(body["peaks"])
    assert body["id"] == hit["id"] and body["path"] == hit["path"]
    assert body["duration"] == pytest.approx(len(mono) / sr)
    assert peaks.shape == (400, 2) and (peaks[:, 0] <= peaks[:, 1]).all()
    assert peaks[:, 0].min() == pytest.approx(mono.min(), abs=1e-4)
    assert peaks[:, 1].max() == pytest.approx(mono.max(), abs=1e-4)
    quarter = len(mono) // 4  # the first quarter of the buckets covers the first quarter of the file
    assert peaks[:100, 1].max() == pytest.approx(mono[:quarter].max(), abs=0.02)
    computed = app.state.service.peak_cache.computed
    assert client.get(f"/peaks/{hit['id']}").json() == body  # cached: not decoded again
    assert app.state.service.peak_cache.computed == computed
    assert_json_error(client.get("/peaks/0"), 404)
    assert_json_error(client.get("/peaks/abc"), 422)


def test_similar(client, serve_index):
    """GET /similar/{id}: more like an indexed window, its own file left out unless same_file."""
    if not hasattr(serve_index, "path"):
        pytest.skip("hade.index is not available (fake index)")
    hit = first_hit(client)
    r = client.get(f"/similar/{hit['id']}", params={"k": 4})
    assert r.status_code == 200 and "search;dur=" in r.headers["server-timing"]
    body = r.json()
    assert body["query"] == {**{k: hit[k] for k in ("id", "path", "start", "end")}, "audio_url": hit["audio_url"]}
    assert 1 <= len(body["results"]) <= 4 and hit["path"] not in {h["path"] for h in body["results"]}
    scores = [h["score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)
    same = client.get(f"/similar/{hit['id']}", params={"k": 50, "same_file": "true"}).json()["results"]
    assert hit["id"] not in {h["id"] for h in same}
    files = client.get(f"/similar/{hit['id']}", params={"k": 50, "per_file": "true"}).json()["results"]
    assert len({h["path"] for h in files}) == len(files)
    assert_json_error(client.get("/similar/0"), 404)
    assert_json_error(client.get(f"/similar/{2**62}"), 404)
    assert_json_error(client.get("/similar/abc"), 422)
    assert_json_error(client.get(f"/similar/{hit['id']}", params={"k": 0}), 422)


def test_internal_errors_are_json_500(serve_index, local_client):
    class Broken:
        model = serve_index.model

        def search(self, *a, **kw):
            raise RuntimeError("boom /secret/path")

    with local_client(create_app(Broken()), raise_server_exceptions=False) as c:
        r = c.get("/search", params={"q": "x"})
        assert assert_json_error(r, 500) == "internal server error"
        assert "secret" not in r.text


@pytest.mark.parametrize("kind", ["flac", "m4a"])
def test_compute_peaks_follows_the_signal(kind, tmp_path, request):
    """Loud first half, silent second half: the envelope says so, for libsndfile and FFmpeg containers."""
    from hade.serve.peaks import compute_peaks

    sr = 16000
    t = np.arange(2 * sr) / sr
    wave = (0.8 * np.sin(2 * np.pi * 440 * t) * (t < 1.0)).astype(np.float32)
    path = tmp_path / f"a.{kind}"
    if kind == "flac":
        sf.write(path, wave, sr)
    else:
        request.getfixturevalue("encode_av")(path, wave, sr, "m4a")
    with open(path, "rb") as f:
        p = compute_peaks(f, buckets=40)
    assert p.duration == pytest.approx(2.0, abs=0.15) and p.mins.shape == p.maxs.shape == (40,)  # AAC adds priming
    assert (p.maxs[2:18] > 0.7).all() and (p.mins[2:18] < -0.7).all()  # the tone
    assert (np.abs(p.maxs[23:]) < 0.05).all() and (np.abs(p.mins[23:]) < 0.05).all()  # the silence
    from hade.errors import InputError

    with pytest.raises(InputError, match="cannot decode the file for its waveform"):
        compute_peaks(io.BytesIO(b"not audio" * 100))
