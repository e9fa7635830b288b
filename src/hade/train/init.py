"""Start a fresh training run from existing weights: `TrainConfig.init_from` / `hade train --init-from PATH`.

PATH is either
* a hade checkpoint directory (from `hade convert`, or `RUN/checkpoints/best` of another run): every
  tensor of the new model whose name and shape match is loaded. Both encoders must load completely and
  be built the same way (same HTSAT geometry and front end, same tokenizer vocabulary), otherwise the
  run is refused; head tensors load where they match and the rest start fresh, so a `tha+dcr` run can
  start from a `tha` or `dp` checkpoint. A *converted* checkpoint (`hade convert`, e.g. a complete
  LAION-CLAP or WavCaps model) also names the run's encoders: `adopt_encoders` (called by the trainer) gives
  the run its audio preset and front end, text architecture, pooling, token limit, tokenizer and embed_dim,
  so any head starts from it with the text encoder and (heads with DP's pooled projection: a `dp` part, DCR)
  the projections loaded; `init.json`'s `parts` says which part starts from the checkpoint, which partly and
  which fresh, and `renamed` which tensor came from a tensor of another name;
* a Hugging Face ``ClapModel`` folder (config.json, weights, tokenizer files): taken as its conversion
  (:mod:`hade.models.convert_hf`) would be, without writing it: `adopt_encoders` gives the run its encoders
  and tokenizer, and the tensors load as from a converted checkpoint (`init.json`'s `kind` is ``hf-clap``);
* a pretraining run directory (`hade pretrain`, :mod:`hade.train.pretrain`): its audio encoder is loaded
  (it must be built as this run's: same preset and front end) and everything else starts as it would
  without `init_from` (the text encoder from its own pretrained weights, the head fresh); the tagging
  classifier is reported unused;
* a foreign audio checkpoint file (HTS-AT ``sed_model.*``, LAION-CLAP ``audio_branch.*``, WavCaps, a
  plain HTSAT state dict, PaSST's AudioSet checkpoints as hear21passt loads them, or BEATs' iter3 /
  iter3+ checkpoints): only the audio
  encoder is loaded, through the explicit key maps of :mod:`hade.models.convert` and
  :mod:`hade.models.convert_audio`, which refuse partial loads and a checkpoint of another architecture
  than the run's preset. A LAION-CLAP encoder needs LAION's 48 kHz front
  end in ``model.audio_overrides`` (the run is refused otherwise: its features would not match);
* the DCASE 2025 baseline's released checkpoint (:mod:`hade.models.convert_dcase`): every part that fits
  loads, as from a converted checkpoint: its PaSST (a ``passt-s-p16-s16`` run), its RoBERTa (the run's text
  encoder must be RoBERTa-large-shaped, e.g. a local roberta-large folder) and its two Linear projections
  into a head with DP's pooled projection built with ``head_options.projection = "linear"`` (a `dp`, or the
  DCR part of `tha+dcr`; a Linear-ReLU-Linear projection starts fresh instead). Its temperature is reported
  in ``scalars``, not applied: the run's is ``TrainConfig.temperature``.
Files are read without unpickling code (safetensors, or ``torch.load(weights_only=True)``). Resumed runs
ignore `init_from`: their own checkpoint is newer.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from hade.checkpoint import TOKENIZER_DIR, WEIGHTS_FILE, read_model_config, read_weights
from hade.config import ModelConfig
from hade.errors import InputError
from hade.models.convert import LAION_FRONT_END, apply_state_dict, read_checkpoint
from hade.models.convert_audio import map_encoder_state_dict
from hade.models.convert_hf import KIND, hf_conversion, hf_folder_config, is_hf_clap_folder
from hade.models.encoders.audio import architecture_name, audio_encoder_config
from hade.models.retrieval import RetrievalModel

if TYPE_CHECKING:
    from hade.train.pretrain import TagEpoch

ENCODERS = ("audio_encoder.", "text_encoder.")


@dataclasses.dataclass(frozen=True)
class InitReport:
    """What `initialise_from` loaded into a fresh run; the trainer writes `to_dict()` as the run's init.json.

    source: the path given; kind: what it held (a converted checkpoint's kind, "hade", "hf-clap",
    "hade-pretrain", a foreign file's kind); loaded: tensors loaded; fresh: the model's tensors left as
    initialised; unused: the source's tensors not taken. Where the source tells: parts ({part: "checkpoint",
    "partly" or "fresh"}), renamed ({our tensor: the source's tensor of another name}), head (the source's
    head), task and pretrain_best (a pretraining run's task and best epoch), scalars (values reported, not
    applied: the DCASE baseline's temperature). None: not told by this kind of source."""

    source: str
    kind: str
    loaded: int
    fresh: list[str]
    unused: list[str]
    parts: dict[str, str] | None = None
    renamed: dict[str, str] | None = None
    head: str | None = None
    task: str | None = None
    pretrain_best: TagEpoch | None = None
    scalars: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The init.json form: the fields this kind of source tells (None ones left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _audio_geometry(audio_encoder: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The config fields of the audio encoder that decide what its weights mean (any architecture; the
    preset's architecture is one of them, so a PaSST checkpoint never starts an HTSAT run)."""
    cfg = audio_encoder_config(audio_encoder, overrides)
    return {"architecture": type(cfg).__name__, **cfg.geometry()}


def _check_audio_geometry(model: RetrievalModel, theirs: ModelConfig, path: Path) -> None:
    ours_audio = _audio_geometry(model.config.audio_encoder, model.config.audio_overrides)
    theirs_audio = _audio_geometry(theirs.audio_encoder, theirs.audio_overrides)
    differ = {k: (theirs_audio.get(k), v) for k, v in ours_audio.items() if theirs_audio.get(k) != v}
    if differ:
        raise InputError(f"init_from {path}: its audio encoder is built differently (field: checkpoint vs this run) "
                         f"{differ}; use the checkpoint's audio_encoder/audio_overrides")


def _from_checkpoint_dir(model: RetrievalModel, path: Path) -> InitReport:
    theirs = read_model_config(path)
    _check_audio_geometry(model, theirs, path)
    weights_file = path / WEIGHTS_FILE
    if not weights_file.is_file():
        raise InputError(f"init_from {path}: missing {WEIGHTS_FILE}")
    return _from_weights(model, theirs, read_weights(weights_file), lambda: _checkpoint_vocab(path), path, "hade")


def _from_hf_folder(model: RetrievalModel, path: Path) -> InitReport:
    """A Hugging Face ClapModel folder: its tensors under hade's names (hade.models.convert_hf's key map), taken
    as from a converted checkpoint; the folder's own tokenizer is the vocabulary the text weights were read with."""
    from hade.models.encoders.text_bert import load_tokenizer

    mapped, report, theirs, tokenizer_dir = hf_conversion(path)
    if report.unexpected:
        raise InputError(f"init_from {path}: ClapModel tensor(s) without a place in hade "
                         f"{sorted(report.unexpected)[:5]}; `hade convert {path} --allow-partial` shows them all")
    _check_audio_geometry(model, theirs, path)
    # transformers stores no shifted-window masks; hade derives them from the geometry just checked
    derived = {n: t for n, t in model.state_dict().items() if n.endswith(".attn_mask") and n not in mapped}
    return _from_weights(model, theirs, {**mapped, **derived}, lambda: load_tokenizer(tokenizer_dir).get_vocab(),
                         path, KIND)


def _from_weights(model: RetrievalModel, theirs: ModelConfig, weights: dict[str, torch.Tensor],
                  vocab: Callable[[], dict[str, int] | None], path: Path, kind: str) -> InitReport:
    """Copy every tensor of `weights` (hade names; a model described by `theirs`) whose name and shape match;
    both encoders must load completely and read the same vocabulary (`vocab()`)."""
    own = model.state_dict()
    source: dict[str, str] = {}  # our name -> the checkpoint's name
    fresh = []
    for name, value in own.items():
        names = _candidates(name, model.config.head, theirs.head, _projection(model, name))
        other = next((n for n in names if n in weights), None)
        if other is not None and weights[other].shape == value.shape:
            source[name] = other
        else:
            fresh.append(name)
    loaded = list(source)
    bad = [n for n in fresh if n.startswith(ENCODERS)]
    if bad:
        raise InputError(f"init_from {path}: {len(bad)} encoder tensor(s) missing or of another shape in the checkpoint "
                         f"(e.g. {bad[:5]}); the encoders must match this run's audio_encoder/text_encoder")
    their_vocab = vocab()
    if their_vocab is not None and their_vocab != model.tokenizer.get_vocab():
        raise InputError(f"init_from {path}: its tokenizer vocabulary differs from this run's text encoder "
                         f"({model.config.text_encoder!r}); the text weights would be read with the wrong tokens")
    with torch.no_grad():
        for name, other in source.items():
            own[name].copy_(weights[other])
    unused = sorted(set(weights) - set(source.values()))
    renamed = {ours: theirs_ for ours, theirs_ in source.items() if ours != theirs_}
    return InitReport(source=str(path), kind=kind, head=theirs.head, loaded=len(loaded),
                      parts=_parts(own, set(loaded)), renamed=renamed, fresh=fresh, unused=unused)


def _part(name: str) -> str:
    """The part a tensor belongs to: audio_encoder, text_encoder, head, or head.parts.<part> of a sum head."""
    pieces = name.split(".")
    return ".".join(pieces[:3]) if name.startswith("head.parts.") else pieces[0]


def _parts(own: dict[str, torch.Tensor], loaded: set[str]) -> dict[str, str]:
    """{part: "checkpoint" | "fresh" | "partly"}: where each part of the new model starts from."""
    counts: dict[str, list[int]] = {}
    for name in own:
        c = counts.setdefault(_part(name), [0, 0])
        c[0 if name in loaded else 1] += 1
    return {p: "checkpoint" if not f else "fresh" if not n else "partly" for p, (n, f) in counts.items()}


def _converted(path: Path) -> bool:
    """True for a checkpoint written by `hade convert` (its info.json names the source)."""
    try:
        info = json.loads((path / "info.json").read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(info, dict) and "converted_from" in info


def adopt_encoders(model_config: ModelConfig, init_from: str | Path | None) -> ModelConfig:
    """`model_config` with the encoders of the converted checkpoint `init_from` (audio preset and overrides,
    text_config, pooling, token limit, the checkpoint's tokenizer, embed_dim); any other `init_from` (or
    none) leaves it as it is: their encoders must already match, which `initialise_from` checks.

    Why: a converted model's text tower (e.g. LAION-CLAP's RoBERTa) can only be built from the checkpoint's
    own description, and its projections only load into a head of the same width."""
    if not init_from:
        return model_config
    path = Path(init_from)
    if is_hf_clap_folder(path):
        theirs = hf_folder_config(path)
    elif path.is_dir() and _converted(path):
        theirs = read_model_config(path)
    else:
        return model_config
    return dataclasses.replace(
        model_config, audio_encoder=theirs.audio_encoder, audio_overrides=dict(theirs.audio_overrides),
        text_encoder=str(path), text_pretrained=False, text_overrides={}, text_config=theirs.text_config,
        text_pooling=theirs.text_pooling, max_text_tokens=theirs.max_text_tokens, embed_dim=theirs.embed_dim)


def _candidates(name: str, our_head: str, their_head: str, projection: tuple[str, ...]) -> list[str]:
    """Checkpoint names that may hold our tensor `name`: encoder tensors by name; head tensors by name between
    heads of one kind, across a sum head and one of its parts (`head.parts.tha.x` of a `tha+dcr` run <->
    `head.x` of a `tha` run, and back), and, for the modules in `projection` (the owning head's
    `pooled_projection`, e.g. DCR's), a `dp` model's projections (`head.parts.dcr.audio_proj.0.weight` of a
    `tha+dcr` run <- `head.audio_proj.0.weight` of a converted CLAP model). A head of another kind never takes
    a tensor because its name and shape happen to match (THA's `text_proj.0` is not DP's)."""
    if not name.startswith("head."):
        return [name]
    out = []
    if name.startswith("head.parts."):
        part, rest = name[len("head.parts."):].split(".", 1)
        out.append(name)
        if part == their_head:
            out.append(f"head.{rest}")
    else:
        rest = name[len("head."):]
        if our_head == their_head:
            out.append(name)
        if our_head in their_head.split("+"):
            out.append(f"head.parts.{our_head}.{rest}")
    if rest.split(".", 1)[0] in projection:
        if their_head == "dp":
            out.append(f"head.{rest}")
        elif "dp" in their_head.split("+"):
            out.append(f"head.parts.dp.{rest}")
    return list(dict.fromkeys(out))


def _projection(model: RetrievalModel, name: str) -> tuple[str, ...]:
    """`pooled_projection` of the head (or sum-head part) that owns tensor `name`."""
    head = model.head
    if name.startswith("head.parts."):
        head = head.parts[name.split(".")[2]]
    return head.capabilities.pooled_projection if name.startswith("head.") else ()


def _checkpoint_vocab(path: Path) -> dict[str, int] | None:
    tok_dir = path / TOKENIZER_DIR
    if not tok_dir.is_dir():
        return None
    from hade.models.encoders.text_bert import load_tokenizer

    return load_tokenizer(tok_dir).get_vocab()


def _linear_projection_only(model: RetrievalModel, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`weights` without the baseline's one-Linear projections when a pooled projection of the run has more
    layers (Linear-ReLU-Linear): its first layer would take them by a coincidence of name and shape."""
    own = model.state_dict()

    def deep(name: str) -> bool:
        pieces = name.split(".")
        rest = pieces[3:] if name.startswith("head.parts.") else pieces[1:]
        return name.startswith("head.") and rest[0] in _projection(model, name) and rest[1] != "0"

    if not any(deep(n) for n in own):
        return weights
    return {k: v for k, v in weights.items() if not k.startswith(("head.audio_proj.", "head.text_proj."))}


def _from_dcase_file(model: RetrievalModel, path: Path, obj: Any) -> InitReport:
    """The DCASE 2025 baseline's checkpoint: its tensors under hade's names, taken as from a converted `dp`
    checkpoint (both encoders must load completely; the file holds no tokenizer to compare)."""
    from hade.models.convert_dcase import KIND as DCASE_KIND
    from hade.models.convert_dcase import map_dcase_state_dict

    architecture = architecture_name(audio_encoder_config(model.config.audio_encoder, model.config.audio_overrides))
    if architecture != "passt":
        raise InputError(f"init_from {path}: the checkpoint holds a passt audio encoder (the DCASE 2025 baseline's "
                         f"PaSST) but the preset builds a {architecture} one; use --audio-encoder passt-s-p16-s16")
    mapped, report = map_dcase_state_dict(obj)
    if report.unexpected:
        raise InputError(f"init_from {path}: DCASE 2025 baseline tensor(s) without a place in hade "
                         f"{sorted(report.unexpected)[:5]}; `hade convert {path} --allow-partial` shows them all")
    theirs = dataclasses.replace(model.config, head="dp")
    weights = _linear_projection_only(model, mapped)
    info = _from_weights(model, theirs, weights, lambda: None, path, DCASE_KIND)
    return dataclasses.replace(info, unused=sorted({*info.unused, *(set(mapped) - set(weights))}),
                               scalars=dict(report.scalars))


def _from_foreign_file(model: RetrievalModel, path: Path) -> InitReport:
    from hade.models.convert_dcase import is_dcase_checkpoint

    obj = read_checkpoint(path)
    if is_dcase_checkpoint(obj):
        return _from_dcase_file(model, path, obj)
    architecture = architecture_name(audio_encoder_config(model.config.audio_encoder, model.config.audio_overrides))
    try:
        mapped, report = map_encoder_state_dict(obj, architecture=architecture)
    except InputError as exc:
        raise InputError(f"init_from {path}: {exc}") from None
    report.source = str(path)
    if report.kind == "laion-clap":
        geometry = _audio_geometry(model.config.audio_encoder, model.config.audio_overrides)
        wrong = {k: (geometry.get(k), v) for k, v in LAION_FRONT_END.items() if geometry.get(k) != v}
        if wrong:
            raise InputError(f"init_from {path}: a LAION-CLAP encoder was trained with LAION's front end; set "
                             f"model.audio_overrides to {LAION_FRONT_END} (this run differs in {wrong})")
    apply_state_dict(model.audio_encoder, mapped, report, what=f"the {report.kind} audio encoder")
    return InitReport(source=str(path), kind=report.kind, loaded=len(report.matched),
                      fresh=[n for n in model.state_dict() if not n.startswith("audio_encoder.")],
                      unused=sorted(report.skipped) + sorted(report.unexpected))


def _from_pretrain_run(model: RetrievalModel, path: Path) -> InitReport:
    from hade.train.pretrain import ENCODER_FILE, PretrainSummary

    try:
        summary = PretrainSummary.read(path)
    except InputError as exc:
        raise InputError(f"init_from {exc}") from None
    cfg = summary.config
    theirs_audio = _audio_geometry(cfg.audio_encoder, cfg.audio_overrides)
    ours_audio = _audio_geometry(model.config.audio_encoder, model.config.audio_overrides)
    differ = {k: (theirs_audio.get(k), v) for k, v in ours_audio.items() if theirs_audio.get(k) != v}
    if differ:
        raise InputError(f"init_from {path}: it pretrained an audio encoder built differently (field: pretrained vs "
                         f"this run) {differ}; use --audio-encoder {cfg.audio_encoder}")
    weights_file = path / ENCODER_FILE
    if not weights_file.is_file():
        raise InputError(f"init_from {path}: missing {ENCODER_FILE} (the pretraining run has not finished an epoch)")
    weights = read_weights(weights_file)
    own = model.audio_encoder.state_dict()
    bad = sorted(k for k, v in own.items() if k not in weights or weights[k].shape != v.shape)
    if bad:
        raise InputError(f"init_from {weights_file}: {len(bad)} audio encoder tensor(s) missing or of another shape "
                         f"(e.g. {bad[:5]})")
    with torch.no_grad():
        for name, value in own.items():
            value.copy_(weights[name])
    loaded = {f"audio_encoder.{k}" for k in own}
    everything = model.state_dict()
    return InitReport(source=str(path), kind="hade-pretrain", task=summary.task, loaded=len(loaded),
                      parts=_parts(everything, loaded), fresh=[n for n in everything if n not in loaded],
                      unused=sorted(set(weights) - set(own)) + ["classifier (the tagging head)"],
                      pretrain_best=summary.best)


def _is_pretrain_run(path: Path) -> bool:
    from hade.train.pretrain import INFO_FILE

    return (path / INFO_FILE).is_file()


def initialise_from(model: RetrievalModel, path: str | Path) -> InitReport:
    """Load the weights at `path` into `model` (see the module docstring); returns what was loaded from
    where (`InitReport`)."""
    path = Path(path)
    if is_hf_clap_folder(path):
        return _from_hf_folder(model, path)
    if path.is_dir() and _is_pretrain_run(path):
        return _from_pretrain_run(model, path)
    if path.is_dir():
        return _from_checkpoint_dir(model, path)
    if path.is_file():
        return _from_foreign_file(model, path)
    raise InputError(f"init_from {path}: no such checkpoint directory or file")


__all__ = ["InitReport", "adopt_encoders", "initialise_from"]
