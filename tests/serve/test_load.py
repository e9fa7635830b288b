"""benchmarks/load.py: bounded, loopback-only load against a live server; no errors, inference serialised."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "load.py"


def test_load_against_live_server(bench, live_server):
    stats = bench.run_load(live_server.url, requests=40, concurrency=4)
    assert stats["errors"] == 0, stats["error_samples"]
    assert stats["requests"] == 40 and sum(stats["by_kind"].values()) == 40
    assert stats["by_kind"].get("audio", 0) > 0  # Range fetches of hits were mixed in
    assert stats["p50_ms"] is not None and stats["p95_ms"] >= stats["p50_ms"]
    report = bench.format_report(stats)
    assert "p50" in report and "p95" in report and "errors: 0" in report


def test_inference_is_serialised(bench, fake_index):
    from hade.serve.app import create_app

    fake_index.max_active = 0
    with bench.BackgroundServer(create_app(fake_index)) as server:
        stats = bench.run_load(server.url, requests=40, concurrency=4, audio_every=0)
    assert stats["errors"] == 0, stats["error_samples"]
    assert fake_index.max_active == 1  # requests overlapped, index.search never did


def test_cli_script(live_server):
    out = subprocess.run([sys.executable, str(SCRIPT), "--url", live_server.url,
                          "--requests", "12", "--concurrency", "3"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "p50" in out.stdout and "errors: 0" in out.stdout


def test_loopback_only(bench):
    with pytest.raises(ValueError, match="loopback"):
        bench.run_load("http://10.1.2.3:8000", requests=1, concurrency=1)
    assert bench.is_loopback_url("http://127.0.0.1:1") and bench.is_loopback_url("http://[::1]:1")
    assert not bench.is_loopback_url("http://example.com/")
    assert bench.percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0 and bench.percentile([], 95) is None


def test_mixed_quick_against_a_server_process(serve_index, bench):
    """`load.py --mixed --quick`: long uploads + text queries against `hade serve` in a subprocess."""
    if not hasattr(serve_index, "path"):
        pytest.skip("hade.index is not available (fake index)")
    clip = bench.long_clip(20.0)
    with bench.ServerProcess(str(serve_index.path)) as server:
        stats = bench.run_mixed(server.url, server.pid, clip, uploads=4, text_alone=5, settle_s=0.2)
    assert stats["errors"] == 0, stats["error_samples"]
    assert stats["uploads_ok"] == 4  # refusals (503) are retried after Retry-After, never errors
    assert stats["text_during_n"] >= 1 and stats["text_alone_n"] == 5
    assert 0 < stats["rss_baseline"] <= stats["rss_peak_sampled"] and stats["rss_vmhwm"] > 0  # VmHWM syncs lazily
    report = bench.format_mixed(stats)
    assert "text p95 during/alone" in report and "server RSS" in report and "errors: 0" in report


def test_multipart_and_clip(bench):
    import io

    import soundfile as sf

    clip = bench.long_clip(3.0)
    info = sf.info(io.BytesIO(clip))
    assert info.samplerate == 8000 and info.frames == 24000 and info.channels == 1
    body, ctype = bench.multipart("file", "a.wav", b"DATA")
    boundary = ctype.split("boundary=")[1]
    assert body.startswith(f"--{boundary}\r\n".encode()) and body.endswith(f"--{boundary}--\r\n".encode())
    assert b'name="file"; filename="a.wav"' in body and b"\r\n\r\nDATA\r\n" in body
