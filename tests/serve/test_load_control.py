"""Issue 12 (serve): text queries overtake audio batches, bounded queues answer 503 + Retry-After,
uploads are decoded in blocks, heap memory is released after an audio query, clean decoder messages."""
from __future__ import annotations

import io
import re
import threading
import time
from typing import Any, Callable

import numpy as np
import pytest
import soundfile as sf
import torch

from hade.errors import InputError
from hade.serve.app import create_app
from hade.serve.concurrency import HIGH, LOW, Lane, PriorityLock
from hade.serve.limits import Limits

TIMEOUT = 30.0  # generous bound for a blocked thread; tests never assert on durations


def wait_until(cond: Callable[[], bool], what: str) -> None:
    """Poll `cond` until true; fail (not hang) if it never becomes true."""
    deadline = time.monotonic() + TIMEOUT
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.005)


def wav(seconds: float = 2.0, sr: int = 8000, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, 0.1 * np.random.default_rng(1).standard_normal((int(seconds * sr), channels)), sr, format="WAV")
    return buf.getvalue()


class Background:
    """Run a request function in a thread; `.result` holds its return value or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.result = exc

    def join(self) -> Any:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "request thread hung"
        return self.result


# ---- the priority lock ------------------------------------------------------------------------------
def test_priority_lock_hands_over_to_high_first():
    lock = PriorityLock()
    order: list[str] = []

    def take(name: str, priority: int) -> None:
        with lock.hold(priority):
            order.append(name)

    with lock.hold(LOW):
        low = threading.Thread(target=take, args=("low", LOW))
        low.start()
        wait_until(lambda: lock.waiting(LOW) == 1, "the LOW thread waits")
        high = threading.Thread(target=take, args=("high", HIGH))
        high.start()
        wait_until(lambda: lock.waiting(HIGH) == 1, "the HIGH thread waits")
    low.join(TIMEOUT)
    high.join(TIMEOUT)
    assert order == ["high", "low"]  # the later HIGH waiter went first
    assert not lock.held and lock.waiting(HIGH) == lock.waiting(LOW) == 0


def test_priority_lock_does_not_starve_low():
    lock = PriorityLock(max_high_streak=2)
    order: list[str] = []

    def take(name: str, priority: int) -> None:
        with lock.hold(priority):
            order.append(name)

    threads = []
    with lock.hold(HIGH):
        threads.append(threading.Thread(target=take, args=("low", LOW)))
        threads[-1].start()
        wait_until(lambda: lock.waiting(LOW) == 1, "the LOW thread waits")
        for n in range(3):
            threads.append(threading.Thread(target=take, args=("high", HIGH)))
            threads[-1].start()
            wait_until(lambda: lock.waiting(HIGH) == n + 1, "the HIGH threads wait")
    for t in threads:
        t.join(TIMEOUT)
    assert order == ["high", "high", "low", "high"]  # LOW's turn came after 2 HIGH grants in a row


def test_lane_bounds():
    lane = Lane("audio", 2)
    assert lane.try_enter() and lane.try_enter() and not lane.try_enter()
    lane.leave()
    assert lane.in_flight == 1 and lane.try_enter()
    with pytest.raises(ValueError):
        Lane("x", 0)


# ---- text overtakes audio ---------------------------------------------------------------------------
def test_text_query_is_served_between_audio_batches(fake_index_cls, audio_folder, serve_model, bench):
    import httpx

    index = fake_index_cls(audio_folder, serve_model)
    events: list[str] = []
    audio_started, release = threading.Event(), threading.Event()

    def on_batch(kind: str, i: int) -> None:
        events.append(f"{kind} {i}")
        if kind == "audio" and i == 0:
            audio_started.set()
            assert release.wait(TIMEOUT)

    index.on_batch = on_batch
    app = create_app(index)
    service = app.state.service
    with bench.BackgroundServer(app) as server:
        # 2 s at the model's rate = 4 half-second windows per batch of 8 -> use a long clip: 3 batches
        clip = wav(seconds=3 * 8 * 0.5, sr=8000)
        audio = Background(lambda: httpx.post(f"{server.url}/search/audio", timeout=TIMEOUT,
                                              files={"file": ("long.wav", clip, "audio/wav")}))
        assert audio_started.wait(TIMEOUT)
        text = Background(lambda: httpx.get(f"{server.url}/search", params={"q": "a dog"}, timeout=TIMEOUT))
        wait_until(lambda: service.model_lock.waiting(HIGH) == 1, "the text query waits for the model")
        release.set()
        assert text.join().status_code == 200
        assert audio.join().status_code == 200
    audio_batches = [e for e in events if e.startswith("audio")]
    assert len(audio_batches) >= 3
    assert events[:2] == ["audio 0", "text 0"], events  # served right after the running batch
    assert index.max_active == 1  # model calls never overlapped


# ---- bounded queues ---------------------------------------------------------------------------------
def test_full_audio_queue_is_503_with_retry_after(fake_index_cls, audio_folder, serve_model, bench):
    import httpx

    index = fake_index_cls(audio_folder, serve_model)
    started, release = threading.Event(), threading.Event()

    def on_batch(kind: str, i: int) -> None:
        if kind == "audio":
            started.set()
            assert release.wait(TIMEOUT)

    index.on_batch = on_batch
    app = create_app(index, limits=Limits(max_audio_active=1, max_audio_queue=1, retry_after_seconds=7))
    lane = app.state.lanes["audio"]
    clip = wav()

    def upload() -> Any:
        return httpx.post(f"{server.url}/search/audio", files={"file": ("q.wav", clip, "audio/wav")},
                          timeout=TIMEOUT)

    with bench.BackgroundServer(app) as server:
        first = Background(upload)
        assert started.wait(TIMEOUT)  # encoding
        second = Background(upload)
        wait_until(lambda: lane.in_flight == 2, "the second upload is queued")
        r = upload()
        assert r.status_code == 503 and r.headers["retry-after"] == "7"
        assert "busy" in r.json()["error"]
        assert httpx.get(f"{server.url}/health", timeout=TIMEOUT).status_code == 200
        release.set()
        assert first.join().status_code == 200 and second.join().status_code == 200
        assert upload().status_code == 200  # room again
    assert lane.in_flight == 0


def test_full_text_queue_is_503(fake_index_cls, audio_folder, serve_model, bench):
    import httpx

    index = fake_index_cls(audio_folder, serve_model)
    started, release = threading.Event(), threading.Event()

    def on_batch(kind: str, i: int) -> None:
        started.set()
        assert release.wait(TIMEOUT)

    index.on_batch = on_batch
    app = create_app(index, limits=Limits(max_text_queue=1))

    def query() -> Any:
        return httpx.get(f"{server.url}/search", params={"q": "dog"}, timeout=TIMEOUT)

    with bench.BackgroundServer(app) as server:
        first = Background(query)
        assert started.wait(TIMEOUT)
        r = query()
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
        assert httpx.get(f"{server.url}/health", timeout=TIMEOUT).status_code == 200  # not a model lane
        release.set()
        assert first.join().status_code == 200


def test_refused_upload_with_expect_continue_is_answered_without_body(fake_index_cls, audio_folder, serve_model):
    """The 503 comes before the app reads anything: the middleware never calls receive()."""
    import asyncio

    from hade.serve.guards import AdmissionMiddleware

    lane = Lane("audio", 1)
    assert lane.try_enter()
    reached, received, sent = [], [], []

    async def app(scope, receive, send):
        reached.append(scope)

    async def receive():
        received.append(1)
        return {"type": "http.request", "body": b"x" * 10, "more_body": False}

    async def send(message):
        sent.append(message)

    mw = AdmissionMiddleware(app, [("POST", "/search/audio", lane)], retry_after=3, drain_limit=100)
    scope = {"type": "http", "method": "POST", "path": "/search/audio", "headers": [(b"expect", b"100-continue")]}
    asyncio.run(mw(scope, receive, send))
    assert not reached and not received and sent[0]["status"] == 503
    assert (b"retry-after", b"3") in sent[0]["headers"]
    asyncio.run(mw({**scope, "headers": []}, receive, send))  # without Expect: the body is drained, not stored
    assert not reached and received == [1] and sent[2]["status"] == 503


# ---- uploads ----------------------------------------------------------------------------------------
def test_block_decoding_matches_whole_clip_decoding(monkeypatch):
    import soxr

    from hade.serve import upload

    rng = np.random.default_rng(0)
    stereo = (0.2 * rng.standard_normal((44100 * 2 + 123, 2))).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, stereo, 44100, format="WAV", subtype="FLOAT")
    data = buf.getvalue()
    reference = soxr.resample(stereo.mean(axis=1, dtype=np.float32), 44100, 16000, quality="HQ")
    monkeypatch.setattr(upload, "DECODE_BLOCK_FRAMES", 1000)  # many blocks
    got = upload.decode_upload(data, 16000)
    assert got.dtype == np.float32 and got.ndim == 1
    assert abs(got.shape[0] - reference.shape[0]) <= 1
    n = min(got.shape[0], reference.shape[0])
    assert np.allclose(got[:n], reference[:n], atol=1e-4)
    same_rate = upload.decode_upload(data, 44100)
    assert np.allclose(same_rate, stereo.mean(axis=1), atol=1e-7)


def test_decoding_checks_length_and_samples(monkeypatch):
    from hade.serve import upload

    with pytest.raises(InputError, match="limit is 1 s"):
        upload.decode_upload(wav(seconds=2.0), 8000, max_seconds=1.0)
    nan = io.BytesIO()
    sf.write(nan, np.array([0.0, np.nan, 0.0] * 10, dtype=np.float32), 8000, format="WAV", subtype="FLOAT")
    with pytest.raises(InputError, match="non-finite"):
        upload.decode_upload(nan.getvalue(), 8000)
    # a header that under-reports the length: the limit still holds while decoding
    monkeypatch.setattr(upload, "DECODE_BLOCK_FRAMES", 1000)
    out = upload._Output(expected=10, limit=5000)
    out.append(np.ones(3000, np.float32))
    with pytest.raises(upload._TooLong):
        out.append(np.ones(3000, np.float32))
    assert out.result().shape == (3000,)


@pytest.mark.parametrize("kind, rate", [("m4a", 44100), ("webm", 48000), ("aac", 44100)])
def test_ffmpeg_containers_decode_in_blocks(tmp_path, encode_av, monkeypatch, kind, rate):
    """An M4A / WebM / ADTS upload is decoded by FFmpeg block by block and mixed to mono like a WAV one;
    its header's duration is checked first, its garbage named as such."""
    from hade.data.audio import load_audio
    from hade.serve import upload

    t = np.arange(int(1.5 * rate)) / rate
    left = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = encode_av(tmp_path / f"q.{kind}", np.stack([left, -left], axis=1) if kind == "m4a" else left, rate, kind)
    data = path.read_bytes()
    monkeypatch.setattr(upload, "DECODE_BLOCK_FRAMES", 1000)
    got = upload.decode_upload(data, 16000)
    whole = load_audio(path, 16000)  # the same decoder, all at once
    assert got.dtype == np.float32 and abs(got.shape[0] - whole.shape[0]) <= 1
    n = min(got.shape[0], whole.shape[0])
    assert np.allclose(got[:n], whole[:n], atol=1e-4)
    if kind == "m4a":  # opposite channels cancel in the mono mix
        assert np.abs(got).max() < 1e-3
    with pytest.raises(InputError, match="limit is 1 s"):
        upload.decode_upload(data, 16000, max_seconds=1.0)
    with pytest.raises(InputError, match="FFmpeg can decode|contains no samples"):
        upload.decode_upload(data[:40] + b"\x00" * 200, 16000)


@pytest.mark.parametrize("payload", [b"not audio at all" * 10, b"RIFF\x00\x00\x00\x00WAVEfmt ", b"\x00" * 5000])
def test_garbage_upload_message_has_no_object_repr(client, payload):
    r = client.post("/search/audio", files={"file": ("bad.wav", payload, "audio/wav")})
    assert r.status_code == 400
    message = r.json()["error"]
    assert "audio" in message
    assert not re.search(r"0x[0-9a-fA-F]{6,}|<_io|SpooledTemporaryFile|object at", message), message


def test_clean_reason():
    from hade.serve.upload import clean_reason

    err = RuntimeError("Error opening <_io.BytesIO object at 0x7f3a2b1c0d90>: Format not recognised.")
    assert clean_reason(err) == "Error opening the upload: Format not recognised."


def test_memory_is_released_after_an_audio_query(client, monkeypatch):
    from hade.serve import service

    calls: list[int] = []
    monkeypatch.setattr(service, "release_memory", lambda: calls.append(1))
    r = client.post("/search/audio", files={"file": ("q.wav", wav(0.7), "audio/wav")})
    assert r.status_code == 200 and calls == [1]
    r = client.post("/search/audio", files={"file": ("q.wav", b"garbage" * 20, "audio/wav")})
    assert r.status_code == 400 and calls == [1, 1]  # also after a failed decode


def test_audio_is_encoded_on_the_low_priority_pool(fake_index_cls, audio_folder, serve_model, local_client):
    import os

    index = fake_index_cls(audio_folder, serve_model)
    seen: list[tuple[str, str, int]] = []
    threads: dict[str, int] = {}

    def on_batch(kind: str, i: int) -> None:
        threads[kind] = torch.get_num_threads()
        seen.append((kind, threading.current_thread().name,
                     os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))

    index.on_batch = on_batch
    with local_client(create_app(index)) as c:
        assert c.post("/search/audio", files={"file": ("q.wav", wav(0.7), "audio/wav")}).status_code == 200
        assert c.get("/search", params={"q": "dog"}).status_code == 200
    audio = [s for s in seen if s[0] == "audio"]
    text = [s for s in seen if s[0] == "text"]
    assert audio and text
    assert all(name.startswith("hade-audio") for _, name, _ in audio)
    assert not any(name.startswith("hade-audio") for _, name, _ in text)
    assert threads["audio"] == 1  # per thread: the text queries keep theirs
    assert threads["text"] == torch.get_num_threads()
    if os.getpriority(os.PRIO_PROCESS, 0) < 19:  # room to lower it
        assert min(n for _, _, n in audio) > max(n for _, _, n in text)


def test_audio_batch_reaches_the_index(fake_index_cls, audio_folder, serve_model, local_client):
    """`Limits.audio_batch` (`hade serve --audio-batch`) is the windows per model turn of an upload; its
    default is the index's own."""
    from hade.index.search import AUDIO_QUERY_BATCH
    from hade.serve.limits import AUDIO_BATCH, Limits

    assert AUDIO_BATCH == AUDIO_QUERY_BATCH
    for limits, expected in ((None, AUDIO_BATCH), (Limits(audio_batch=2), 2)):
        index = fake_index_cls(audio_folder, serve_model)
        with local_client(create_app(index, limits=limits)) as c:
            assert c.post("/search/audio", files={"file": ("q.wav", wav(0.7), "audio/wav")}).status_code == 200
        assert index.audio_batches == [expected]
    with pytest.raises(ValueError, match="audio_batch"):
        Limits(audio_batch=0)
