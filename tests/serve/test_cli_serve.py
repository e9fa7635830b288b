"""`hade serve` CLI helpers: parser defaults, argument errors, and the app cmd_serve hands to uvicorn."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

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


def test_cmd_serve_runs_uvicorn_with_the_app(serve_index, monkeypatch, capsys, local_client):
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
    with local_client(calls["app"]) as c:
        health = c.get("/health").json()
    assert calls["app"].state.service.index.model.inference_dtype == torch.bfloat16
    assert health["windows"] == len(serve_index) and health["model_fingerprint"] == serve_index.info().fingerprint


def test_limits_options():
    args = parse("my.idx", "--allowed-host", "a.lan", "--allowed-host", "10.0.0.5", "--max-audio-queue", "0",
                 "--max-text-queue", "4")
    assert args.allowed_host == ["a.lan", "10.0.0.5"] and args.max_audio_queue == 0 and args.max_text_queue == 4
    defaults = parse("my.idx")
    assert defaults.allowed_host == [] and defaults.max_audio_queue == 2 and defaults.max_text_queue == 32


@pytest.mark.parametrize("argv, message", [
    (["--allowed-host", "http://x.lan/"], "--allowed-host"), (["--allowed-host", " "], "--allowed-host"),
    (["--max-audio-queue", "-1"], "--max-audio-queue"), (["--max-text-queue", "0"], "--max-text-queue"),
    (["--audio-batch", "0"], "--audio-batch"),
])
def test_limit_argument_errors(tmp_path, monkeypatch, argv, message):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not start a server"))
    with pytest.raises(InputError, match=message):
        cmd_serve(parse(str(tmp_path), *argv))


def test_cmd_serve_checks_hosts(fake_index_cls, audio_folder, serve_model, monkeypatch, tmp_path, capsys,
                                local_client):
    import uvicorn

    import hade.index

    monkeypatch.setattr(hade.index.Index, "open", classmethod(lambda cls, *a, **kw: fake_index_cls(audio_folder,
                                                                                                    serve_model)))
    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    threads = torch.get_num_threads()
    try:
        cmd_serve(parse(str(tmp_path), "--host", "192.168.7.7", "--allowed-host", "search.lan", "--threads", "1"))
    finally:
        torch.set_num_threads(threads)
    assert "warning" in capsys.readouterr().err
    with local_client(calls["app"]) as c:
        for host in ("search.lan", "192.168.7.7:8000", "localhost:8000", "127.0.0.1"):
            assert c.get("/health", headers={"Host": host}).status_code == 200, host
        r = c.get("/health", headers={"Host": "evil.example"})
        assert r.status_code == 400 and "--allowed-host" in r.json()["error"]


def test_serve_on_a_damaged_index_fails_with_one_line(tmp_path, monkeypatch, capsys):
    import uvicorn

    import hade.index
    from hade.cli import main
    from hade.errors import IndexDamaged

    def damaged(cls, *a, **kw):
        raise IndexDamaged("x.idx/arrays/c000001/embed.npy is truncated (expected 100 bytes, found 10); "
                           "repair with `hade index sounds --out x.idx`", file="arrays/c000001/embed.npy",
                           repair="hade index sounds --out x.idx")

    monkeypatch.setattr(hade.index.Index, "open", classmethod(damaged))
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: pytest.fail("must not start a server"))
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hade serve: error: ") and "embed.npy" in err[0]
    assert "Traceback" not in err[0]


def test_the_index_is_opened_with_one_thread(serve_index, monkeypatch):
    """hade serve opens the index with one torch thread, so that no OpenMP team forms on the main thread
    beside the text thread's (two teams on 2 cores made caption encoding 1.9x slower:
    benchmarks/omp_teams.py); the text thread then gets --threads."""
    if not hasattr(serve_index, "path"):
        pytest.skip("hade.index is not available (fake index)")
    import uvicorn

    from hade.index import Index

    seen = {}
    real_open = Index.open.__func__

    def spy(cls, *args, **kwargs):
        seen["threads"] = torch.get_num_threads()
        return real_open(cls, *args, **kwargs)

    monkeypatch.setattr(Index, "open", classmethod(spy))
    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app))
    threads = torch.get_num_threads()
    try:
        assert cmd_serve(parse(str(serve_index.path), "--threads", "2")) == 0
    finally:
        torch.set_num_threads(threads)
    assert seen["threads"] == 1 and calls["app"].state.service.text_threads == 2


@pytest.mark.parametrize("argv, tuned", [([], True), (["--allocator", "tuned"], True), (["--allocator", "system"], False)])
def test_allocator_option(serve_index, monkeypatch, argv, tuned):
    if not hasattr(serve_index, "path"):
        pytest.skip("hade.index is not available (fake index)")
    import uvicorn

    from hade.serve import concurrency

    calls = []
    monkeypatch.setattr(concurrency, "tune_allocator", lambda: calls.append("tuned") or True)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    threads = torch.get_num_threads()
    try:
        assert cmd_serve(parse(str(serve_index.path), "--threads", "1", *argv)) == 0
    finally:
        torch.set_num_threads(threads)
    assert calls == (["tuned"] if tuned else [])
    with pytest.raises(SystemExit):
        parse("my.idx", "--allocator", "jemalloc")


@pytest.mark.parametrize("host, url", [("0.0.0.0", "http://127.0.0.1:8123/"), ("::", "http://[::1]:8123/"),
                                       ("127.0.0.1", "http://127.0.0.1:8123/"),
                                       ("192.168.7.7", "http://192.168.7.7:8123/")])
def test_the_printed_address_is_one_the_host_check_accepts(fake_index_cls, audio_folder, serve_model, monkeypatch,
                                                           tmp_path, capsys, local_client, host, url):
    """`--host 0.0.0.0` printed http://0.0.0.0:PORT/, which the server's own Host check answers with 400."""
    from urllib.parse import urlsplit

    import uvicorn

    import hade.index

    monkeypatch.setattr(hade.index.Index, "open", classmethod(lambda cls, *a, **kw: fake_index_cls(audio_folder,
                                                                                                    serve_model)))
    calls = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    threads = torch.get_num_threads()
    try:
        cmd_serve(parse(str(tmp_path), "--host", host, "--port", "8123", "--threads", "1"))
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert f"open {url}" in printed
    with local_client(calls["app"]) as c:
        assert c.get("/health", headers={"Host": urlsplit(url).netloc}).status_code == 200
