"""Embeddings in one call: the library behind `RetrievalModel.embed_text` and `RetrievalModel.embed_audio`
(what laion_clap's `get_text_embedding` / `get_audio_embedding_from_filelist` and sentence-transformers'
`encode` do): no grad, eval mode, batches, progress for long lists, float32 numpy, L2-normalised.

The vectors are the head's pooled vectors (`pooled_text` / `pooled_audio`), the ones an index recalls
with. Audio is cut and padded exactly as `hade index` cuts and pads a file (`hade.data.windows`: the
model's clip length capped to 10 s, hop half of it, a file shorter than a window zero-padded at the end),
so `embed_audio(path, per_window=True)` gives the vectors an index of that file stores (before its
float16 storage rounding).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence, Union

import numpy as np
import soxr
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hade.data.audio import load_audio
from hade.data.windows import resolve_window, window_batch, window_bounds
from hade.errors import InputError

if TYPE_CHECKING:
    from hade.models.retrieval import RetrievalModel

AudioItem = Union[str, Path, np.ndarray, torch.Tensor]
TEXT_BATCH = 64  # texts per text-encoder call
AUDIO_BATCH = 16  # windows per audio-encoder call (`hade index --batch-size`'s default)
PROGRESS_ITEMS = 256  # with progress=None a bar is shown (on a terminal) from this many texts or files on


@dataclass(frozen=True)
class WindowEmbeddings:
    """Per-window audio embeddings: row w is a window of input item `item[w]`; rows are in input order,
    each item's windows in time order.

    vectors [W, D] float32, L2-normalised; item [W] int64 (position of the item in the input); start, end
    [W] float64: the window's seconds in the item (end - start is shorter than the window only for an item
    shorter than one window, which was zero-padded to the window's length)."""

    vectors: np.ndarray
    item: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def pooled(self, num_items: int) -> np.ndarray:
        """One vector per item [num_items, D]: the mean of the item's window vectors, L2-normalised again
        (the vector an audio query of the whole item is searched with, `hade search --audio`)."""
        counts = np.bincount(self.item, minlength=num_items)
        if len(counts) > num_items or (counts == 0).any():
            raise ValueError(f"pooled: windows cover items {sorted(set(self.item.tolist()))}, not 0..{num_items - 1}")
        sums = np.zeros((num_items, self.vectors.shape[1]), dtype=np.float64)
        np.add.at(sums, self.item, self.vectors)
        means = torch.from_numpy(sums / counts[:, None]).float()
        return F.normalize(means, dim=-1).numpy()


def require_pooled(model: "RetrievalModel") -> None:
    """InputError unless the model's head has pooled vectors, naming the heads that have them."""
    if model.head.capabilities.has_pooled:
        return
    from hade.models.heads import pooled_heads

    raise InputError(f"head {model.config.head!r} has no pooled vector to embed with (it only scores text-audio "
                     f"pairs from token features); heads with one: {', '.join(pooled_heads())}")


@contextlib.contextmanager
def _inference(model: "RetrievalModel") -> Iterator[None]:
    """Eval mode and no autograd for the call; every submodule's train/eval mode is restored afterwards
    (a training loop may keep some in eval, e.g. a frozen encoder)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for module, training in modes:
            module.training = training


def _bar(total: int, progress: bool | None, desc: str, unit: str) -> tqdm:
    """progress None: a bar from PROGRESS_ITEMS items on, on a terminal only (tqdm's disable=None)."""
    disable = (not progress) if progress is not None else (None if total >= PROGRESS_ITEMS else True)
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True)


def _batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def text_list(texts: str | Iterable[str]) -> list[str]:
    """A single str is one text; otherwise every element must be a str (InputError naming the first that
    is not: a list of characters or of None is a mistake, not texts)."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, np.ndarray, torch.Tensor)) or not isinstance(texts, Iterable):
        raise InputError(f"embed_text takes a str or a list of str, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InputError(f"embed_text: text {i} is a {type(t).__name__}, expected a str")
    if not out:
        raise InputError("embed_text: no texts given")
    return out


def embed_text(model: "RetrievalModel", texts: str | Iterable[str], batch_size: int = TEXT_BATCH,
               progress: bool | None = None) -> np.ndarray:
    """texts -> [N, D] float32 L2-normalised pooled text vectors (`model.head.pooled_text`), row i for
    text i. A single str is one text ([1, D]), never its characters. See `RetrievalModel.embed_text`."""
    captions = text_list(texts)
    batch_size = _batch_size(batch_size)
    require_pooled(model)
    parts = []
    with _inference(model), _bar(len(captions), progress, "embed text", "text") as bar:
        for a in range(0, len(captions), batch_size):
            chunk = captions[a:a + batch_size]
            vec = model.head.pooled_text(model.encode_text(chunk))
            parts.append(F.normalize(vec.float(), dim=-1).cpu().numpy())
            bar.update(len(chunk))
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def audio_list(items: AudioItem | Sequence[AudioItem]) -> list[AudioItem]:
    """A path or a 1-D waveform is one item; a 2-D array or tensor [N, T] is N waveforms; otherwise a
    sequence of items."""
    if isinstance(items, (str, Path)):
        return [items]
    if isinstance(items, (np.ndarray, torch.Tensor)) and items.ndim not in (1, 2):
        raise InputError(f"embed_audio: an array of waveforms is [T] or [N, T], got shape {tuple(items.shape)}")
    out = [items] if isinstance(items, (np.ndarray, torch.Tensor)) and items.ndim == 1 else list(items)
    if not out:
        raise InputError("embed_audio: no audio given")
    return out


def waveform(item: AudioItem, index: int, sample_rate: int | None, target_rate: int) -> np.ndarray:
    """One item as a float32 mono waveform [T] at `target_rate`: a file is decoded (`load_audio`; AudioError
    names it); an array or tensor [T] at `sample_rate` is resampled with soxr (HQ) like a file."""
    if isinstance(item, (str, Path)):
        return load_audio(item, target_rate)
    if not isinstance(item, (np.ndarray, torch.Tensor)):
        raise InputError(f"embed_audio: item {index} is a {type(item).__name__}; expected a file path, a numpy "
                         "array or a torch tensor")
    if sample_rate is None:
        raise InputError(f"embed_audio: item {index} is a waveform; give its sample_rate= (Hz; the model takes "
                         f"{target_rate} Hz and resamples others)")
    wave = item.detach().cpu().float().numpy() if isinstance(item, torch.Tensor) else item
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise InputError(f"embed_audio: item {index} must be a non-empty mono waveform [T], got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise InputError(f"embed_audio: item {index} contains non-finite samples (NaN/Inf)")
    if int(sample_rate) != target_rate:
        wave = soxr.resample(wave, int(sample_rate), target_rate, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)


def _encode_windows(model: "RetrievalModel", pieces: list[np.ndarray], window: int) -> np.ndarray:
    """Window pieces (each <= window samples) -> [B, D] float32 L2-normalised pooled audio vectors."""
    batch = torch.from_numpy(window_batch(pieces, window)).to(model.device)
    vec = model.head.pooled_audio(model.encode_audio(batch))
    return F.normalize(vec.float(), dim=-1).cpu().numpy()


def embed_windows(model: "RetrievalModel", items: AudioItem | Sequence[AudioItem], sample_rate: int | None = None,
                  batch_size: int = AUDIO_BATCH, window: float | None = None, hop: float | None = None,
                  progress: bool | None = None,
                  on_error: Callable[[int, InputError], None] | None = None) -> WindowEmbeddings:
    """Every window of every item (see `RetrievalModel.embed_audio(per_window=True)`). Items are decoded
    one at a time as their windows are needed, and `batch_size` windows (across items) go to the encoder at
    once, so memory holds the waveforms of one batch of windows beyond the vectors.

    on_error: called with (item position, error) for an item that cannot be used (an undecodable file,
    AudioError); that item then has no windows, and the others go on (a batch job's skip-and-report).
    Default: the error is raised. When no item has a window, vectors is [0, 0]."""
    items = audio_list(items)
    batch_size = _batch_size(batch_size)
    require_pooled(model)
    rate = model.sample_rate
    win, step = resolve_window(rate, model.max_samples, window, hop, model.clip_samples)
    pieces: list[np.ndarray] = []
    rows: list[tuple[int, int, int]] = []  # (item, start sample, end sample) per window, in order
    parts: list[np.ndarray] = []
    with _inference(model), _bar(len(items), progress, "embed audio", "file") as bar:
        for i, item in enumerate(items):
            try:
                wave = waveform(item, i, sample_rate, rate)
            except InputError as err:
                if on_error is None:
                    raise
                on_error(i, err)
                bar.update(1)
                continue
            for s, e in window_bounds(len(wave), win, step):
                pieces.append(wave[s:e])
                rows.append((i, s, e))
                if len(pieces) == batch_size:
                    parts.append(_encode_windows(model, pieces, win))
                    pieces = []
            bar.update(1)
        if pieces:
            parts.append(_encode_windows(model, pieces, win))
    table = np.array(rows, dtype=np.int64).reshape(-1, 3)
    vectors = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    return WindowEmbeddings(np.ascontiguousarray(vectors, dtype=np.float32), table[:, 0], table[:, 1] / rate,
                            table[:, 2] / rate)


def embed_audio(model: "RetrievalModel", items: AudioItem | Sequence[AudioItem], sample_rate: int | None = None,
                batch_size: int = AUDIO_BATCH, per_window: bool = False, window: float | None = None,
                hop: float | None = None, progress: bool | None = None) -> np.ndarray | WindowEmbeddings:
    """[N, D] float32 (one L2-normalised vector per item: the normalised mean of its windows' vectors), or
    with `per_window` the `WindowEmbeddings`. See `RetrievalModel.embed_audio`."""
    items = audio_list(items)
    windows = embed_windows(model, items, sample_rate, batch_size, window, hop, progress)
    return windows if per_window else windows.pooled(len(items))
