"""Zero-shot audio classification with any retrieval model (what CLAP users do every day).

Labels become captions through a prompt template (default ``"This is a sound of {label}."``), are encoded
once, and every audio file is scored against them: top-k labels with scores (the model's similarity) and
probabilities (softmax over the labels of the similarity times the model's learned scale, LAION-CLAP's
exp(logit_scale_a) / WavCaps' 1/temp for converted models, else 1/0.07). A file longer than the model's clip
is cut into windows; the file's scores are the mean of its windows' scores, and each window keeps its own
top-k. `evaluate` runs a labelled folder (ESC-50's layout, or one folder per class) and reports accuracy and
mAP.

    from hade.eval.zero_shot import ZeroShotClassifier
    clf = ZeroShotClassifier(hade.load("ckpt"), ["dog", "rain", "siren"])
    clf.classify_file("clip.wav", top_k=3)
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hade.data.audio import AUDIO_EXTENSIONS, fit_length, load_audio
from hade.data.scan import scan_audio
from hade.data.windows import resolve_window, window_bounds
from hade.errors import AudioError, InputError
from hade.models.heads.base import score_all
from hade.models.heads.reprs import Reprs, cat_reprs
from hade.models.retrieval import RetrievalModel
from hade.utils.atomic import write_json_atomic, write_text_atomic

DEFAULT_TEMPLATE = "This is a sound of {label}."
DEFAULT_LOGIT_SCALE = 1.0 / 0.07  # CLIP/CLAP's initial scale, for models that learned none
ESC50_CSV = Path("meta") / "esc50.csv"


# A --labels value ending so names a file, never a label: a mistyped path must not become one label.
LABEL_FILE_SUFFIXES = (".txt", ".csv", ".tsv", ".lst", ".list", ".json")


def _looks_like_a_path(spec: str) -> bool:
    return spec.lower().endswith(LABEL_FILE_SUFFIXES) or "/" in spec or os.sep in spec


def read_labels(spec: str | Path | Sequence[str]) -> list[str]:
    """Labels from a list, a file (UTF-8, a byte-order mark allowed; one label per line; blank lines and lines
    starting with # skipped) or a comma-separated string. InputError when empty, when a label repeats, or when
    a string that is no file looks like a path (ends in .txt, .csv, ... or holds a path separator)."""
    if isinstance(spec, (list, tuple)):
        labels = [str(x).strip() for x in spec]
    elif Path(str(spec)).is_file():
        path = Path(str(spec))
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: unreadable labels file ({e}); expected UTF-8 text, one label per line") from None
        labels = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    elif _looks_like_a_path(str(spec)):
        raise InputError(f"labels file {spec}: not found; give an existing file with one label per line, or the "
                         "labels themselves ('dog,rain,siren')")
    else:
        labels = [x.strip() for x in str(spec).split(",")]
    labels = [x for x in labels if x]
    if not labels:
        raise InputError(f"labels {spec!r}: no labels (give a file with one label per line or 'a,b,c')")
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise InputError(f"labels: {repeated} given more than once")
    return labels


def prompts(labels: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """One caption per label; InputError when the template has no ``{label}`` field."""
    if "{label}" not in template:
        raise InputError(f"--template {template!r}: must contain {{label}}, e.g. {DEFAULT_TEMPLATE!r}")
    try:
        return [template.format(label=label) for label in labels]
    except (KeyError, IndexError, ValueError) as e:
        raise InputError(f"--template {template!r}: only the field {{label}} is allowed ({e})") from None


@dataclass
class Prediction:
    label: str
    score: float  # the model's similarity (cosine for dp)
    probability: float  # softmax over all labels of score × logit scale


@dataclass
class WindowResult:
    start: float  # seconds
    end: float
    top: list[Prediction]


@dataclass
class FileResult:
    path: str
    top: list[Prediction]
    windows: list[WindowResult] = field(default_factory=list)  # one per window; empty for a single window

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Skipped:
    """A file left out of a batch, and why (undecodable, empty, ...)."""

    path: str
    reason: str


@dataclass
class Classification:
    """What `ZeroShotClassifier.classify_all` made of a list of files: one result per file it could decode,
    in the order given, and the files it skipped."""

    results: list[FileResult]
    skipped: list[Skipped] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"results": [r.to_dict() for r in self.results], "skipped": [asdict(s) for s in self.skipped]}


class ZeroShotClassifier:
    """Scores audio against `labels` turned into prompts by `template`.

    window/hop (seconds): the windows of long files (default: the model's clip length, half-overlapping, as
    `hade index`); logit_scale: the softmax scale (default: the model's `head_options.logit_scale`, else 1/0.07).
    """

    def __init__(self, model: RetrievalModel, labels: Sequence[str], template: str = DEFAULT_TEMPLATE,
                 window: float | None = None, hop: float | None = None, batch_size: int = 16,
                 logit_scale: float | None = None) -> None:
        self.model = model.eval()
        self.labels = read_labels(list(labels))
        self.template = template
        self.batch_size = max(1, int(batch_size))
        self.window, self.hop = resolve_window(model.sample_rate, model.max_samples, window, hop, model.clip_samples)
        scale = logit_scale if logit_scale is not None else model.config.head_options.get("logit_scale")
        self.logit_scale = float(scale) if scale is not None else DEFAULT_LOGIT_SCALE
        captions = prompts(self.labels, template)
        with torch.no_grad():
            parts = [model.encode_text(captions[i:i + 64]) for i in range(0, len(captions), 64)]
        self.text: Reprs = cat_reprs(parts)

    def scores(self, waveforms: torch.Tensor) -> torch.Tensor:
        """waveforms [B, T] at the model's rate (T <= max_samples) -> [B, L] similarities to the labels."""
        with torch.no_grad():
            audio = self.model.encode_audio(waveforms.to(self.model.device))
            return score_all(self.model.head, self.text, audio).T.contiguous()

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """[..., L] similarities -> [..., L] softmax probabilities over the labels."""
        return torch.softmax(scores.float() * self.logit_scale, dim=-1)

    def _top(self, scores: torch.Tensor, top_k: int) -> list[Prediction]:
        probs = self.probabilities(scores)
        k = min(max(1, int(top_k)), len(self.labels))
        order = torch.argsort(scores, descending=True, stable=True)[:k]
        return [Prediction(self.labels[i], float(scores[i]), float(probs[i])) for i in order.tolist()]

    def _windows(self, wave: np.ndarray) -> tuple[list[tuple[int, int]], torch.Tensor]:
        bounds = window_bounds(len(wave), self.window, self.hop)
        pieces = [fit_length(wave[s:e], self.window, mode="start") for s, e in bounds]
        return bounds, torch.from_numpy(np.stack(pieces))

    def file_scores(self, path: str | Path) -> tuple[list[tuple[int, int]], torch.Tensor]:
        """(window sample bounds, [W, L] scores per window) of one audio file."""
        bounds, waves = self._windows(load_audio(path, self.model.sample_rate))
        rows = [self.scores(waves[i:i + self.batch_size]) for i in range(0, len(waves), self.batch_size)]
        return bounds, torch.cat(rows, 0)

    def classify_file(self, path: str | Path, top_k: int = 5) -> FileResult:
        """Top-k labels of one file (mean of its windows' scores) and of each window when there are several."""
        bounds, scores = self.file_scores(path)
        rate = self.model.sample_rate
        windows = [] if len(bounds) == 1 else [
            WindowResult(s / rate, e / rate, self._top(scores[i], top_k)) for i, (s, e) in enumerate(bounds)]
        return FileResult(str(path), self._top(scores.mean(0), top_k), windows)

    def classify(self, paths: Sequence[str | Path], top_k: int = 5) -> list[FileResult]:
        """`classify_file` of each path; the first undecodable file raises AudioError (see `classify_all`)."""
        return [self.classify_file(p, top_k) for p in paths]

    def classify_all(self, paths: Sequence[str | Path], top_k: int = 5, progress: bool = False) -> Classification:
        """`classify_file` of each path, skipping (and listing with the reason) the files that cannot be
        decoded; a tqdm bar on stderr when `progress`."""
        out = Classification([])
        for path in tqdm(paths, desc="classify", unit="file", disable=not progress):
            try:
                out.results.append(self.classify_file(path, top_k))
            except AudioError as e:
                out.skipped.append(Skipped(str(path), _reason(e)))
        return out


def _reason(error: AudioError) -> str:
    return str(getattr(error, "reason", None) or error)


def audio_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files to classify: each file as given (any extension: it is decoded or skipped), and the audio files
    under each folder, recursively, as `hade index` finds them (its extensions, hidden names skipped).
    InputError naming a path that does not exist."""
    files: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            files.extend(path for _, path in scan_audio(item, follow_external_links=True)[0])
        elif item.exists():
            files.append(item)
        else:
            hint = (" (--json prints to stdout now; write a file with --out FILE)"
                    if item.suffix.lower() in (".json", ".csv") else "")
            raise InputError(f"{item}: no such audio file or folder{hint}")
    return files


# ---- labelled folders ---------------------------------------------------------------------------------------

def labelled_folder(folder: str | Path) -> tuple[list[Path], list[str], list[str]]:
    """(audio files, their class, the class names in order) of ESC-50's layout (``meta/esc50.csv`` with
    ``filename``, ``target``, ``category`` columns and ``audio/``) or of one sub-folder per class."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--eval {folder}: no such folder")
    if (folder / ESC50_CSV).is_file():
        return _esc50(folder)
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, truth = [], []
    for name in classes:
        for f in sorted((folder / name).rglob("*")):
            if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS and not f.name.startswith("."):
                files.append(f)
                truth.append(name)
    if not files:
        raise InputError(f"--eval {folder}: expected ESC-50's layout ({ESC50_CSV} + audio/) or one sub-folder of "
                         "audio files per class; found no audio")
    return files, truth, sorted(set(truth))


def _esc50(folder: Path) -> tuple[list[Path], list[str], list[str]]:
    meta = folder / ESC50_CSV
    try:
        with meta.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{meta}: unreadable ({e})") from None
    need = {"filename", "category"}
    if not rows or not need <= set(rows[0]):
        raise InputError(f"{meta}: expected columns {sorted(need)} (and optionally target), got "
                         f"{sorted(rows[0]) if rows else 'no rows'}")
    order: dict[str, int] = {}
    for line, r in enumerate(rows, start=2):  # line 1 is the header
        if not r.get("filename") or not r.get("category") or None in r:
            raise InputError(f"{meta}:{line}: expected a filename and a category (and the header's other columns), "
                             f"got {[v for k, v in r.items() if k is not None]}")
        target = (r.get("target") or "0").strip()
        if not target.lstrip("-").isdigit():
            raise InputError(f"{meta}:{line}: target must be a whole number (the class index), got {target!r}")
        order[r["category"]] = int(target)
    classes = sorted(order, key=lambda c: (order[c], c))
    files = [folder / "audio" / r["filename"] for r in rows]
    return files, [r["category"] for r in rows], classes


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """AP of ranking items by `scores` [N] (ties broken by index) for boolean `relevant` [N]; nan when none is."""
    if not relevant.any():
        return math.nan
    order = np.argsort(-scores, kind="stable")
    hits = relevant[order]
    ranks = np.flatnonzero(hits) + 1
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


@dataclass(frozen=True)
class ZeroShotMetrics:
    """Zero-shot classification of `files` files among `classes` labels: `accuracy` (top-1), `top_k` and
    `top_k_accuracy`, `mAP` (mean over the classes present of the AP of ranking the files by that class's
    score), in percent; from `evaluate` also the `template`, the `folder` and the files it `skipped`."""

    files: int
    classes: int
    accuracy: float
    top_k: int
    top_k_accuracy: float
    mAP: float
    template: str | None = None
    folder: str | None = None
    skipped: tuple[Skipped, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `hade classify --eval` (the top-k accuracy under "top{k}_accuracy")."""
        return {"files": self.files, "classes": self.classes, "accuracy": self.accuracy,
                f"top{self.top_k}_accuracy": self.top_k_accuracy, "mAP": self.mAP, "template": self.template,
                "folder": self.folder, "skipped": [asdict(x) for x in self.skipped]}


def classification_metrics(scores: np.ndarray, truth: np.ndarray, top_k: int = 5) -> ZeroShotMetrics:
    """scores [N, L], truth [N] class indices -> the metrics (top_k capped at L)."""
    top = np.argsort(-scores, axis=1, kind="stable")
    k = min(top_k, scores.shape[1])
    aps = [average_precision(scores[:, c], truth == c) for c in range(scores.shape[1])]
    present = [a for a in aps if not math.isnan(a)]
    return ZeroShotMetrics(files=int(len(truth)), classes=int(scores.shape[1]),
                           accuracy=100.0 * float(np.mean(top[:, 0] == truth)), top_k=k,
                           top_k_accuracy=100.0 * float(np.mean((top[:, :k] == truth[:, None]).any(1))),
                           mAP=100.0 * float(np.mean(present)))


def evaluate(model: RetrievalModel, folder: str | Path, labels: Sequence[str] | None = None,
             template: str = DEFAULT_TEMPLATE, batch_size: int = 16, window: float | None = None,
             hop: float | None = None, top_k: int = 5, progress: bool = False) -> ZeroShotMetrics:
    """Zero-shot accuracy and mAP on a labelled folder (see `labelled_folder`). `labels` (default: the folder's
    classes) must contain every class; extra labels act as distractors. Files that cannot be decoded are
    skipped, listed in `skipped` and left out of the metrics; a tqdm bar when
    `progress`."""
    files, truth, classes = labelled_folder(folder)
    labels = read_labels(list(labels)) if labels else classes
    unknown = sorted(set(classes) - set(labels))
    if unknown:
        raise InputError(f"--eval {folder}: classes {unknown[:10]} are not among the labels")
    clf = ZeroShotClassifier(model, labels, template, window=window, hop=hop, batch_size=batch_size)
    rows, kept, skipped = [], [], []
    for f, t in tqdm(list(zip(files, truth)), desc="classify", unit="file", disable=not progress):
        try:
            rows.append(clf.file_scores(f)[1].mean(0).numpy())
            kept.append(t)
        except AudioError as e:
            skipped.append(Skipped(str(f), _reason(e)))
    if not rows:
        raise InputError(f"--eval {folder}: none of its {len(files)} audio files could be decoded "
                         f"(e.g. {skipped[0].path}: {skipped[0].reason})")
    index = {name: i for i, name in enumerate(labels)}
    result = classification_metrics(np.stack(rows), np.array([index[t] for t in kept]), top_k)
    return replace(result, template=template, folder=str(folder), skipped=tuple(skipped))


def write_json(results: Classification | list[FileResult], path: str | Path) -> None:
    """A Classification as {"results": [...], "skipped": [...]}; a plain list of results as a list."""
    write_json_atomic(path, results.to_dict() if isinstance(results, Classification) else
                      [r.to_dict() for r in results])


def write_csv(results: list[FileResult], path: str | Path) -> None:
    """One row per (file or window, rank): path, start, end (empty for the whole file), rank, label, score,
    probability."""
    buffer = io.StringIO(newline="")
    out = csv.writer(buffer)
    out.writerow(["path", "start", "end", "rank", "label", "score", "probability"])
    for r in results:
        for rank, p in enumerate(r.top, 1):
            out.writerow([r.path, "", "", rank, p.label, f"{p.score:.6f}", f"{p.probability:.6f}"])
        for w in r.windows:
            for rank, p in enumerate(w.top, 1):
                out.writerow([r.path, f"{w.start:.3f}", f"{w.end:.3f}", rank, p.label, f"{p.score:.6f}",
                              f"{p.probability:.6f}"])
    write_text_atomic(path, buffer.getvalue())


__all__ = ["DEFAULT_TEMPLATE", "Classification", "FileResult", "Prediction", "Skipped", "WindowResult",
           "ZeroShotClassifier", "ZeroShotMetrics", "audio_files", "average_precision",
           "classification_metrics", "evaluate", "labelled_folder", "prompts", "read_labels", "write_csv",
           "write_json"]
