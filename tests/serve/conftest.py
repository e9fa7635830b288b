"""Fixtures for `hade serve`: a tiny SynthCaps folder, a tiny THA+DCR model, an index over them, servers.

`serve_index` is a real `hade.index.Index` when that package is importable, otherwise `FakeIndex`, a
stand-in with the same duck-typed interface (ids from 1 like SQLite, windows of half a second).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import stat
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
WINDOW_SECONDS = 0.5


def load_benchmark() -> Any:
    """benchmarks/load.py as a module (benchmarks/ is not a package)."""
    from _scripts import load_script

    return load_script("benchmarks/load.py", "hade_bench_load")


@dataclass
class FakeHit:
    id: int
    path: str
    start: float
    end: float
    score: float


@dataclass(frozen=True)
class FakeQueryVector:
    """FakeIndex's stand-in for `hade.index.QueryVector`: the seed of the scores."""

    seed: int


@dataclass
class FakeWindow:
    id: int
    path: str
    start: float
    end: float




class FakeIndex:
    """Index stand-in: half-second windows over every WAV under `root`; scores from a hash of the query.

    Mirrors the contract of `hade.index.search.Index`: `search(..., guard=)` runs each "model call" (the
    text encoding; each batch of `audio_batch` windows of an audio query) inside `with guard():`,
    `open_audio` verifies the file against the size and mtime recorded at construction, `health()` reports
    `problems` (set `damaged` to simulate a damaged file; searches then raise IndexDamaged).
    Counts concurrent model calls (`max_active`) so tests can check the server serialises inference, and
    calls `on_batch(kind, i)` inside the guard of each model call when set (tests block or record there).
    """

    def __init__(self, root: Path, model: Any) -> None:
        from hade.data.audio import audio_info

        self.root = Path(root)
        self.model = model
        self.windows: dict[int, FakeWindow] = {}
        self.stats: dict[str, tuple[int, int]] = {}
        wid = 1
        for f in sorted(self.root.rglob("*.wav")):
            duration = audio_info(f).duration
            rel = f.relative_to(self.root).as_posix()
            st = f.stat()
            self.stats[rel] = (st.st_size, st.st_mtime_ns)
            start = 0.0
            while start < duration - 1e-6:
                self.windows[wid] = FakeWindow(wid, rel, start, min(duration, start + WINDOW_SECONDS))
                wid += 1
                start += WINDOW_SECONDS
        self.active = 0
        self.max_active = 0
        self._count_lock = threading.Lock()
        self.damaged: str | None = None
        self.on_batch: Any = None
        self.audio_batches: list[int] = []  # the audio_batch of each audio query

    def _model_call(self, guard: Any, kind: str, i: int) -> None:
        with (guard() if guard is not None else contextlib.nullcontext()):
            self._enter()
            try:
                time.sleep(0.002)  # widen the window for overlapping calls
                if self.on_batch is not None:
                    self.on_batch(kind, i)
            finally:
                self._exit()

    def _check(self) -> None:
        from hade.errors import IndexDamaged

        if self.damaged:
            raise IndexDamaged(f"fake.idx/{self.damaged} is truncated; repair with `hade index {self.root} "
                               "--out fake.idx`", file=self.damaged, repair="hade index")

    def _enter(self) -> None:
        with self._count_lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def _exit(self) -> None:
        with self._count_lock:
            self.active -= 1

    def search(self, query: Any, k: int = 10, candidates: int = 100, per_file: bool = False, *,
               guard: Any = None, timing: dict[str, float] | None = None, audio_batch: int = 4) -> list[FakeHit]:
        self._check()
        if isinstance(query, np.ndarray):
            query = self.query_vector(query, guard=guard, audio_batch=audio_batch)
        if isinstance(query, FakeQueryVector):
            seed = query.seed
        else:
            assert isinstance(query, str) and query.strip()
            seed = zlib.crc32(query.encode())
            self._model_call(guard, "text", 0)
        hits = [FakeHit(w.id, w.path, w.start, w.end, self._score(seed, w.id)) for w in self.windows.values()]
        hits.sort(key=lambda h: -h.score)
        if per_file:
            seen: set[str] = set()
            hits = [h for h in hits if not (h.path in seen or seen.add(h.path))]
        return hits[:k]

    @staticmethod
    def _score(seed: int, window_id: int) -> float:
        return float(np.cos(seed + 7 * window_id))

    def query_vector(self, query: np.ndarray, *, guard: Any = None, audio_batch: int = 4) -> FakeQueryVector:
        """The contract's model calls: one per `audio_batch` windows, each inside `guard`."""
        self._check()
        assert query.ndim == 1 and query.dtype == np.float32
        windows = max(1, int(np.ceil(query.shape[0] / (WINDOW_SECONDS * self.model.sample_rate))))
        self.audio_batches.append(audio_batch)
        for i in range(-(-windows // audio_batch)):
            self._model_call(guard, "audio", i)
        return FakeQueryVector(zlib.crc32(query[:256].tobytes()))

    def file_scores(self, id: int, query: Any, *, guard: Any = None) -> tuple[list[FakeWindow], np.ndarray]:
        path = self.windows[id].path
        windows = sorted((w for w in self.windows.values() if w.path == path), key=lambda w: w.start)
        seed = query.seed if isinstance(query, FakeQueryVector) else zlib.crc32(str(query).encode())
        return windows, np.array([self._score(seed, w.id) for w in windows], dtype=np.float32)

    def get(self, id: int) -> FakeWindow:
        return self.windows[id]

    def audio_path(self, id: int) -> Path:
        f, _ = self.open_audio(id)
        f.close()
        return Path(os.path.realpath(self.root / self.windows[id].path))

    def open_audio(self, id: int) -> tuple[Any, os.stat_result]:
        """The contract's checks: inside the root, O_NOFOLLOW on the resolved path, same size and mtime."""
        from hade.errors import StaleFile

        rel = self.windows[id].path
        real = os.path.realpath(self.root / rel)
        base = os.path.realpath(self.root)
        if os.path.commonpath([base, real]) != base:
            raise StaleFile(f"{rel} resolves outside the indexed folder", reason="outside")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise StaleFile(f"{rel} is no longer on disk; re-run `hade index`", reason="missing") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_size, st.st_mtime_ns) != self.stats[rel]:
            os.close(fd)
            raise StaleFile(f"{rel} changed since it was indexed; re-run `hade index`", reason="changed")
        return os.fdopen(fd, "rb"), st

    def health(self) -> Any:
        from hade.index import Health, Problem

        if self.damaged:
            return Health((Problem(self.damaged, "is truncated", "chunk"),), f"hade index {self.root} --out fake.idx")
        return Health()

    def window_audio(self, id: int) -> np.ndarray:
        from hade.data.audio import load_audio

        w = self.windows[id]
        sr = self.model.sample_rate
        wave = load_audio(self.audio_path(id), sr)
        return wave[int(round(w.start * sr)):int(round(w.end * sr))]

    def info(self) -> Any:
        from hade.index import IndexInfo
        from hade.index.meta import CodecState

        return IndexInfo(path=self.root / "fake.idx", root=self.root, files=len({w.path for w in self.windows.values()}),
                         unreadable_files=0, windows=len(self.windows), fingerprint=None,
                         head=self.model.config.head, factorised=True, sample_rate=self.model.sample_rate,
                         window=WINDOW_SECONDS, hop=WINDOW_SECONDS, storage_dtype="float16", pooled_key="embed", repr_keys=("embed",),
                         shard=None, ann=None, token_codec=CodecState(), bytes_per_window=0)

    def __len__(self) -> int:
        return len(self.windows)


def tiny_model(config: Any, head: str, **options: Any) -> Any:
    import hade
    from hade.config import ModelConfig

    torch.manual_seed(0)
    return hade.create_model(ModelConfig(**{**config.__dict__, "head": head, "head_options": options})).eval()


@pytest.fixture(scope="session")
def audio_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hade.data.synthcaps import generate

    out = tmp_path_factory.mktemp("serve-audio")
    generate(out, clips=12, sample_rate=8000, duration=1.0, progress=False)
    return out


@pytest.fixture(scope="session")
def serve_model(tiny_model_config: Any) -> Any:
    return tiny_model(tiny_model_config, "tha+dcr", factors=4)


def real_index(folder: Path, model: Any, work: Path) -> Any:
    """A real `hade.index.Index` over `folder` (half-second windows, quarter-second hop)."""
    from hade.checkpoint import save_model
    from hade.index import Index, build_index

    save_model(model, work / "ckpt")
    build_index(folder, work / "index", ckpt=work / "ckpt", window=WINDOW_SECONDS, hop=WINDOW_SECONDS / 2,
                progress=False)
    return Index.open(work / "index")


@pytest.fixture(scope="session")
def serve_index(audio_folder: Path, serve_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The index every API/browser test uses: real when hade.index exists, else the fake."""
    if importlib.util.find_spec("hade.index") is None:
        return FakeIndex(audio_folder, serve_model)
    return real_index(audio_folder, serve_model, tmp_path_factory.mktemp("serve-index"))


@pytest.fixture(scope="session")
def dp_index(audio_folder: Path, tiny_model_config: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """An index whose model's head has no THA (plain dot product)."""
    model = tiny_model(tiny_model_config, "dp")
    if importlib.util.find_spec("hade.index") is None:
        return FakeIndex(audio_folder, model)
    return real_index(audio_folder, model, tmp_path_factory.mktemp("serve-index-dp"))


@pytest.fixture(scope="session")
def fake_index(audio_folder: Path, serve_model: Any) -> FakeIndex:
    """The fake, which counts overlapping calls (`max_active`)."""
    return FakeIndex(audio_folder, serve_model)


@pytest.fixture(scope="session")
def fake_index_cls() -> type[FakeIndex]:
    """The FakeIndex class (tests build their own over private folders)."""
    return FakeIndex


@pytest.fixture(scope="session")
def real_index_fn() -> Any:
    """`real_index(folder, model, work)`: build and open a real index (needs hade.index)."""
    return real_index


@pytest.fixture(scope="session")
def app(serve_index: Any) -> Any:
    from hade.serve.app import create_app

    return create_app(serve_index)


LOCAL = "http://localhost"  # TestClient's default Host, "testserver", is refused by the Host check


def make_local_client(app: Any, **kwargs: Any) -> Any:
    """A TestClient whose requests carry `Host: localhost` (a name the server accepts)."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url=LOCAL, **kwargs)


@pytest.fixture(scope="session")
def local_client() -> Any:
    """`local_client(app, **TestClient kwargs)`: a TestClient sending `Host: localhost`."""
    return make_local_client


@pytest.fixture(scope="session")
def client(app: Any) -> Iterator[Any]:
    with make_local_client(app) as c:
        yield c


@pytest.fixture(scope="session")
def bench() -> Any:
    """benchmarks/load.py as a module."""
    return load_benchmark()


@pytest.fixture(scope="session")
def live_server(app: Any, bench: Any) -> Iterator[Any]:
    """The app served by uvicorn on 127.0.0.1:<free port> in a background thread."""
    server = bench.BackgroundServer(app)
    with server:
        yield server
