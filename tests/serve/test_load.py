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
