"""`hade serve` CLI helpers: parser defaults, argument errors, and the app cmd_serve hands to uvicorn."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from hade.errors import InputError
from hade.serve.cli import add_serve_parser, cmd_serve, default_threads


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hade")
    add_serve_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])


def test_parser_defaults():
    args = parse("my.idx")
    assert args.index == Path("my.idx") and args.host == "127.0.0.1" and args.port == 8000
    assert args.threads is None and args.max_upload_mb == 20 and args.root is None
    assert 1 <= default_threads() <= 4


@pytest.mark.parametrize("argv, message", [
    (["missing.idx"], "not found"), (["{idx}", "--port", "0"], "--port"), (["{idx}", "--threads", "0"], "--threads"),
    (["{idx}", "--max-upload-mb", "0"], "--max-upload-mb"), (["{idx}", "--root", "/no/such/dir"], "--root"),
])
def test_argument_errors(tmp_path, monkeypatch, argv, message):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not start a server"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "idx").mkdir()
    with pytest.raises(InputError, match=message):
        cmd_serve(parse(*[a.replace("{idx}", str(tmp_path / "idx")) for a in argv]))


def test_cmd_serve_runs_uvicorn_with_the_app(serve_index, monkeypatch, capsys):
    if not hasattr(serve_index, "path"):
        pytest.skip("hade.index is not available (fake index)")
    import uvicorn

    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    threads = torch.get_num_threads()
    try:
        assert cmd_serve(parse(str(serve_index.path), "--port", "8765", "--threads", "1", "--compute", "bf16")) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert calls["host"] == "127.0.0.1" and calls["port"] == 8765 and calls["workers"] == 1
    assert "http://127.0.0.1:8765/" in capsys.readouterr().out
    with TestClient(calls["app"]) as c:
        health = c.get("/health").json()
    assert calls["app"].state.service.index.model.inference_dtype == torch.bfloat16
    assert health["windows"] == len(serve_index) and health["model_fingerprint"] == serve_index.info()["fingerprint"]
