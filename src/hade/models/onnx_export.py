"""Both towers of a retrieval model as ONNX graphs, for inference without PyTorch (`hade onnx`).

    audio.onnx  waveform [batch, window] float32 at the model's sample rate -> embedding [batch, D] float32
    text.onnx   input_ids, attention_mask [batch, tokens] int64              -> embedding [batch, D] float32

Each embedding is the head's L2-normalised pooled vector, the one `RetrievalModel.embed_audio(...,
per_window=True)` gives for one window (what an index stores) and `embed_text` gives for a caption. The
mel front end (`torch.stft`) is inside the audio graph; the sample axis is fixed at the model's default
index window (`hade.data.windows.resolve_window`: the training clip length, at most 10 s): a shorter clip is
zero-padded at the end, a longer one cut into windows, as `hade index` does. Caption normalisation
(`config.caption_normalize`) and tokenisation stay outside the graph: the tokenizer files are saved in
`tokenizer/` and `onnx.json` says how to reproduce the pre-processing.

Only heads with pooled vectors per side (`HeadCapabilities.has_pooled`) can be exported: the others score
a text against an audio from both sides' token features at once, which no single tower computes.
The towers compute the pooled vectors alone (`RetrievalHead.text_vector` / `audio_vector`): HCI's word,
phrase, frame and segment units, whose pooling has data-dependent shapes, are not in its graphs. Code that
torch.export cannot trace is one InputError naming the graph and hade's line (`export_failure`).

Exporter: torch.onnx's dynamo exporter (needs onnxscript). The TorchScript exporter (`dynamo=False`) cannot
export `torch.stft(return_complex=True)` ("STFT does not currently support complex types"), so it is not
used. The export traces with PyTorch's math attention kernel: with the CPU flash kernel the traced
attention output has strides that the exporter's decomposition does not reproduce, and the Swin blocks'
reshape then fails ("Cannot view a tensor ...").
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import logging
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hade.data.windows import resolve_window
from hade.errors import InputError
from hade.utils.atomic import atomic_dir

if TYPE_CHECKING:
    from hade.models.retrieval import RetrievalModel

DEFAULT_OPSET = 18  # the lowest opset the dynamo exporter writes; ONNX Runtime >= 1.14 runs it
MIN_OPSET = 18
AUDIO_FILE, TEXT_FILE, METADATA_FILE, TOKENIZER_DIR = "audio.onnx", "text.onnx", "onnx.json", "tokenizer"
EXPORT_PACKAGES = ("onnx", "onnxscript")  # what torch.onnx.export(dynamo=True) imports
# Weights from this size on are saved beside the graph ("<file>.data"): one protobuf file cannot exceed
# 2 GiB, and torch's exporter itself switches at 1.5 GiB; deciding here makes the record say so.
EXTERNAL_WEIGHTS_BYTES = 1536 * 1024 * 1024
CHECK_CAPTIONS = ("a dog barks", "rain falls on a tin roof while thunder rumbles far away and a car passes by")


@dataclass(frozen=True)
class OnnxTensor:
    """One input or output of a graph: name, element type ("float32" / "int64") and shape, a str for a
    dynamic axis ("batch", "tokens") and an int for a fixed one."""

    name: str
    dtype: str
    shape: tuple[str | int, ...]


@dataclass(frozen=True)
class OnnxGraph:
    """One exported tower: its file (relative to the export folder), inputs and outputs, and the file beside
    it that holds its weights when they are stored apart (`weights_file`, "<file>.data"; None: inside)."""

    file: str
    inputs: tuple[OnnxTensor, ...]
    outputs: tuple[OnnxTensor, ...]
    weights_file: str | None = None


@dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote into `out_dir` (`onnx.json` holds all but `out_dir`).

    window_samples: the audio graph's fixed sample axis at `sample_rate` Hz; hop_samples: the hop between
    the windows `hade index` cuts a longer file into (a shorter one is zero-padded at the end);
    caption_normalize and max_text_tokens: the text pre-processing (normalise, then tokenise with
    `tokenizer/`, truncated to max_text_tokens, padded within the batch). exact_scores: the dot product of
    a text's and an audio's embeddings is the head's score (`HeadCapabilities.factorised`); otherwise the
    embeddings are the head's recall vectors (what an index's ANN searches) and its full score needs hade."""

    out_dir: Path
    audio: OnnxGraph
    text: OnnxGraph
    sample_rate: int
    window_samples: int
    hop_samples: int
    embed_dim: int
    caption_normalize: str
    max_text_tokens: int
    head: str
    exact_scores: bool
    hade_version: str
    opset: int
    tokenizer: str = TOKENIZER_DIR
    exporter: str = field(default_factory=lambda: f"torch {torch.__version__} torch.onnx.export(dynamo=True)")

    def metadata(self) -> dict[str, Any]:
        """The JSON-serialisable description written as `onnx.json`."""
        data = asdict(self)
        del data["out_dir"]
        return data

    @property
    def audio_path(self) -> Path:
        return self.out_dir / self.audio.file

    @property
    def text_path(self) -> Path:
        return self.out_dir / self.text.file


@dataclass(frozen=True)
class OnnxCheck:
    """Largest |ONNX Runtime - hade| over the embedding entries of each tower on the check inputs."""

    audio_max_abs_diff: float
    text_max_abs_diff: float
    audio_batch: int
    texts: int


class AudioTower(nn.Module):
    """waveform [B, window] float32 -> [B, D] float32 L2-normalised pooled audio vectors (eval, no autocast)."""

    def __init__(self, model: "RetrievalModel") -> None:
        super().__init__()
        self.encoder, self.head = model.audio_encoder, model.head

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        vec = self.head.audio_vector(self.encoder(waveform))
        return F.normalize(vec.float(), dim=-1)


class TextTower(nn.Module):
    """input_ids, attention_mask [B, N] int64 -> [B, D] float32 L2-normalised pooled text vectors."""

    def __init__(self, model: "RetrievalModel") -> None:
        super().__init__()
        self.encoder, self.head = model.text_encoder, model.head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        vec = self.head.text_vector(self.encoder(input_ids, attention_mask))
        return F.normalize(vec.float(), dim=-1)


def require_packages(names: Sequence[str]) -> None:
    """InputError naming `pip install 'hade[onnx]'` unless every module in `names` imports."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise InputError(f"ONNX export needs the package(s) {', '.join(missing)}: pip install 'hade[onnx]'")


def check_exportable(model: "RetrievalModel") -> None:
    """InputError unless the head has a pooled vector per side (`capabilities.has_pooled`)."""
    if model.head.capabilities.has_pooled:
        return
    from hade.models.heads import pooled_heads

    raise InputError(f"head {model.config.head!r} cannot be exported to ONNX: it has no pooled vector per side "
                     "(its score needs the text's and the audio's token features at once, so neither tower "
                     f"alone gives a vector to search with); heads that can: {', '.join(pooled_heads())}")


def check_opset(opset: int) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise InputError(f"--opset must be an integer >= {MIN_OPSET} (the dynamo exporter's lowest), got {opset!r}")
    return opset


def check_out_dir(out_dir: Path, force: bool) -> None:
    """InputError when `out_dir` is a file, or a non-empty folder and not `force`."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise InputError(f"--out {out_dir}: folder exists and is not empty; use --force to replace it")


def window_samples(model: "RetrievalModel") -> tuple[int, int]:
    """(window, hop) samples: the default of `hade index` and `embed_audio`; the window is the audio graph's
    sample axis."""
    return resolve_window(model.sample_rate, model.max_samples, None, None, model.clip_samples)


def _hade_version() -> str:
    """The installed package's version (its metadata; the library does not import the `hade` package)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hade")
    except PackageNotFoundError:
        return "unknown"


def describe(model: "RetrievalModel", out_dir: Path, opset: int, embed_dim: int) -> OnnxExport:
    """The record of an export of `model` (pooled vectors of `embed_dim`) into `out_dir`; nothing is written."""
    embedding = OnnxTensor("embedding", "float32", ("batch", embed_dim))
    tokens = ("batch", "tokens")
    window, hop = window_samples(model)
    return OnnxExport(
        out_dir=Path(out_dir),
        audio=OnnxGraph(AUDIO_FILE, (OnnxTensor("waveform", "float32", ("batch", window)),), (embedding,)),
        text=OnnxGraph(TEXT_FILE, (OnnxTensor("input_ids", "int64", tokens),
                                   OnnxTensor("attention_mask", "int64", tokens)), (embedding,)),
        sample_rate=int(model.sample_rate), window_samples=window, hop_samples=hop,
        embed_dim=embed_dim, caption_normalize=str(model.config.caption_normalize),
        max_text_tokens=int(model.config.max_text_tokens), head=str(model.config.head),
        exact_scores=bool(model.head.capabilities.factorised),
        hade_version=_hade_version(), opset=opset)


@contextlib.contextmanager
def _export_mode(model: "RetrievalModel") -> Iterator[None]:
    """Eval mode, no autograd, math attention (see the module docstring); train modes restored after."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's chatter off: its warnings (deprecations inside torch, axis-name notes) and torch's
    loggers below ERROR ("torchvision is not installed"), and torch.export's print of a failed trace's whole
    graph to stderr (the failure becomes one line, `export_failure`); all restored after."""
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name == "torch" or name.startswith("torch.")] + [logging.getLogger("torch")]
    levels = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in levels:
            logger.setLevel(level)


def _name_outputs(program: Any, names: Sequence[str]) -> None:
    """Give the graph's outputs `names`. Passing them as torch.onnx.export's output_names is not enough: the
    exporter names a node's value after its aten op, so the text graph's token lookup is also called
    "embedding" and ONNX Runtime refuses the file ("Duplicate definition of name"); such a value is renamed."""
    graph = program.model.graph
    outputs = {id(v) for v in graph.outputs}
    for node in graph.all_nodes():
        for value in node.outputs:
            if value.name in names and id(value) not in outputs:
                value.name = f"{value.name}_{node.op_type.lower()}"
    for value, name in zip(graph.outputs, names):
        value.name = name


def export_failure(error: BaseException, head: str, file: str) -> InputError:
    """One line for an exporter failure: the innermost cause's first line and the deepest line of hade's
    code in its traceback (e.g. data-dependent pooling: "Could not extract specialized integer from
    data-dependent expression ... at hci.py:68 (time_pooling)")."""
    cause = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    frames = [f for f in traceback.extract_tb(cause.__traceback__)
              if "/hade/" in f.filename.replace("\\", "/") and not f.filename.endswith("onnx_export.py")]
    at = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].name})" if frames else ""
    text = str(cause).strip()
    first = text.splitlines()[0] if text else type(cause).__name__
    return InputError(f"head {head!r}: {file} does not export to ONNX{at}: {first}")


def weight_bytes(tower: nn.Module) -> int:
    """Bytes of the tower's parameters and buffers as float32 (what its graph stores)."""
    return 4 * sum(t.numel() for t in [*tower.parameters(), *tower.buffers()] if t.is_floating_point())


def _export(tower: nn.Module, args: tuple[torch.Tensor, ...], graph: OnnxGraph, dynamic: dict[str, dict[int, Any]],
            folder: Path, opset: int, head: str) -> OnnxGraph:
    """torch.onnx.export (dynamo) of `tower` called on `args` into `folder / graph.file`, axes of `dynamic`
    symbolic; returns `graph` with its `weights_file` when the weights are stored beside it."""
    names = [t.name for t in graph.inputs]
    try:
        with _quiet():
            program = torch.onnx.export(tower.eval(), args, None, input_names=names, opset_version=opset,
                                        dynamo=True, verbose=False, optimize=True,
                                        dynamic_shapes=tuple(dynamic.get(n, {}) for n in names))
    except torch.onnx.OnnxExporterError as error:
        raise export_failure(error, head, graph.file) from None
    _name_outputs(program, [t.name for t in graph.outputs])
    external = weight_bytes(tower) >= EXTERNAL_WEIGHTS_BYTES
    program.save(str(folder / graph.file), external_data=external)
    return dataclasses.replace(graph, weights_file=f"{graph.file}.data") if external else graph


def export_onnx(model: "RetrievalModel", out_dir: str | Path, *, opset: int = DEFAULT_OPSET,
                force: bool = False) -> OnnxExport:
    """Write `audio.onnx`, `text.onnx`, `tokenizer/` and `onnx.json` into `out_dir` (atomically: into a
    temporary folder beside it, renamed into place) and return what was written.

    InputError: a head without pooled vectors, onnx/onnxscript not installed, opset < 18, or `out_dir`
    a non-empty folder without `force`. The model's mode is restored; its compute dtype is ignored (the
    graphs are float32)."""
    out_dir = Path(out_dir)
    check_exportable(model)
    check_opset(opset)
    check_out_dir(out_dir, force)
    require_packages(EXPORT_PACKAGES)
    ids, mask = model.tokenize(list(CHECK_CAPTIONS))
    text_tower, audio_tower = TextTower(model), AudioTower(model)
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens")
    with _export_mode(model):
        record = describe(model, out_dir, opset, embed_dim=int(text_tower(ids, mask).shape[-1]))
        wave = torch.zeros(2, record.window_samples, device=model.device)
        with atomic_dir(out_dir) as tmp:
            audio = _export(audio_tower, (wave,), record.audio, {"waveform": {0: batch}}, tmp, opset, record.head)
            text = _export(text_tower, (ids, mask), record.text,
                           {"input_ids": {0: batch, 1: tokens}, "attention_mask": {0: batch, 1: tokens}}, tmp,
                           opset, record.head)
            record = dataclasses.replace(record, audio=audio, text=text)
            model.tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
            (tmp / METADATA_FILE).write_text(json.dumps(record.metadata(), indent=2) + "\n")
    return record


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of `path` (threads: intra-op threads, default torch's thread count)."""
    require_packages(("onnxruntime",))
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: not its notes on nodes it could not constant-fold
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_audio(session: Any, waveform: np.ndarray) -> np.ndarray:
    """audio.onnx on waveform [B, window] float32 -> [B, D]."""
    return session.run(["embedding"], {"waveform": np.ascontiguousarray(waveform, dtype=np.float32)})[0]


def run_text(session: Any, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """text.onnx on input_ids, attention_mask [B, N] -> [B, D]."""
    feeds = {"input_ids": np.asarray(input_ids, np.int64), "attention_mask": np.asarray(attention_mask, np.int64)}
    return session.run(["embedding"], feeds)[0]


def check_export(model: "RetrievalModel", export: OnnxExport, *, audio_batch: int = 2,
                 captions: Sequence[str] = CHECK_CAPTIONS, seed: int = 0) -> OnnxCheck:
    """ONNX Runtime against hade on the same inputs: `audio_batch` random waveforms of one window (Gaussian,
    std 0.1, seeded) against `embed_audio(per_window=True)`, and `captions` (tokenised by the model,
    padded to the longest) against `embed_text`."""
    rng = np.random.default_rng(seed)
    wave = (0.1 * rng.standard_normal((audio_batch, export.window_samples))).astype(np.float32)
    ref_audio = model.embed_audio(wave, sample_rate=export.sample_rate, per_window=True, progress=False).vectors
    got_audio = run_audio(onnx_session(export.audio_path), wave)
    ids, mask = model.tokenize(list(captions))
    got_text = run_text(onnx_session(export.text_path), ids.cpu().numpy(), mask.cpu().numpy())
    ref_text = model.embed_text(list(captions), progress=False)
    return OnnxCheck(audio_max_abs_diff=float(np.abs(got_audio - ref_audio).max()),
                     text_max_abs_diff=float(np.abs(got_text - ref_text).max()),
                     audio_batch=audio_batch, texts=len(captions))
