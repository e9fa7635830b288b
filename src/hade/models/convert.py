"""Load foreign HTSAT checkpoints into hade's audio encoder through explicit key maps.

Supported key conventions (``kind``; detected from the keys when not given):

* ``htsat-lightning`` -- RetroCirce/HTS-Audio-Transformer Lightning checkpoints: ``{"state_dict": {...}}``
  with every key prefixed ``sed_model.``.
* ``laion-clap`` -- LAION-CLAP (``{"state_dict": {...}}``): ``audio_branch.*`` is the HTSAT; ``text_branch.*``
  (RoBERTa), ``audio_projection``/``text_projection``/``*_transform``/``logit_scale_*`` are reported, not loaded.
* ``wavcaps`` -- WavCaps retrieval ``ASE`` checkpoints (``{"model": {...}, "config", ...}``):
  ``audio_encoder.audio_enc.*`` is the HTSAT; ``text_encoder.*``, ``audio_proj``/``text_proj``/``temp`` reported.
* ``htsat`` -- a plain HTSAT ``state_dict`` (hade's own module names).

Every convention may carry a DataParallel/DDP ``module.`` prefix, which is stripped. Keys that hade drops on
purpose (torchlibrosa STFT/mel weights, the TSCAM tagging head) are listed as *skipped* with the reason;
keys with weights hade cannot use are listed as *unexpected* with the reason. Encoder keys absent from the
checkpoint (or with another shape) refuse the load unless ``allow_partial``.

Files are read without unpickling code: ``.safetensors`` through safetensors, anything else through
``torch.load(..., weights_only=True)``.

Complete LAION-CLAP / WavCaps models (text tower and projections too): :mod:`hade.models.convert_full`.
"""
from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hade.errors import InputError

KINDS = ("htsat-lightning", "laion-clap", "wavcaps", "htsat")
ENCODER_PREFIX = {"htsat-lightning": "sed_model.", "laion-clap": "audio_branch.",
                  "wavcaps": "audio_encoder.audio_enc.", "htsat": ""}
# LAION-CLAP's front end (48 kHz, hop 480, window 1024, 64 mels, 50-14 000 Hz) as HTSATConfig overrides.
LAION_FRONT_END = {"sample_rate": 48000, "n_fft": 1024, "hop_length": 480, "mel_bins": 64,
                   "fmin": 50.0, "fmax": 14000.0}

# (encoder-relative key prefix, reason) for keys dropped by design.
_SKIP_RULES = (
    ("spectrogram_extractor.", "torchlibrosa STFT weights: hade recomputes its STFT from the config (LogMel)"),
    ("logmel_extractor.", "torchlibrosa mel filterbank: hade recomputes it from the config (LogMel)"),
    ("tscam_conv.", "TSCAM AudioSet tagging head: not part of hade's encoder (retrieval uses the pooled latent)"),
    ("head.", "AudioSet classifier head (unused in TSCAM mode): not part of hade's encoder"),
    ("audio_feats_extractor.", "WavCaps torchlibrosa STFT/mel front end: hade recomputes it from the config (LogMel)"),
)
# (encoder-relative key prefix, reason) for encoder weights hade has no place for.
_ENCODER_UNEXPECTED = (
    ("patch_embed.mel_conv2d.", "LAION feature-fusion local branch: not implemented in hade (non-fusion path only)"),
    ("patch_embed.fusion_model.", "LAION feature-fusion module: not implemented in hade (non-fusion path only)"),
    ("mel_conv1d.", "LAION 1-D feature-fusion branch: not implemented in hade"),
    ("fusion_model.", "LAION feature-fusion module: not implemented in hade"),
    ("absolute_pos_embed", "absolute position embedding (ape=True): hade's HTSAT has none"),
)
# (full key prefix, reason) for the non-audio parts of retrieval checkpoints.
_OTHER_RULES = (
    ("text_branch.", "LAION RoBERTa text tower: not loadable into hade's BERT-family text encoder"),
    ("audio_projection.", "LAION audio projection (Linear-ReLU-Linear to 512): hade's heads have other shapes"),
    ("text_projection.", "LAION text projection: hade's heads have other shapes"),
    ("audio_transform.", "LAION MLP-loss transform: no counterpart in hade"),
    ("text_transform.", "LAION MLP-loss transform: no counterpart in hade"),
    ("logit_scale_a", "LAION temperature: hade's temperature comes from its config/head"),
    ("logit_scale_t", "LAION temperature: hade's temperature comes from its config/head"),
    ("text_encoder.", "WavCaps text tower: not mapped; hade's text encoder is built from --text-encoder"),
    ("audio_proj.", "WavCaps audio projection: hade's heads have other shapes"),
    ("text_proj.", "WavCaps text projection: hade's heads have other shapes"),
    ("temp", "WavCaps temperature: hade's temperature comes from its config/head"),
)
# Encoder buffers that hade computes itself; a checkpoint may omit them.
_DERIVED_BUFFERS = ("relative_position_index", "attn_mask", "num_batches_tracked")


@dataclass
class ConversionReport:
    """What a key map did. Keys in ``matched``/``missing``/``mismatched`` are hade encoder names;
    keys in ``skipped``/``unexpected`` are the source's names (after ``module.`` stripping)."""

    kind: str
    source: str | None = None
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: dict[str, str] = field(default_factory=dict)
    unexpected: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    recomputed: list[str] = field(default_factory=list)
    scalars: dict[str, float] = field(default_factory=dict)
    stripped_module_prefix: bool = False
    loaded: bool = False

    @property
    def complete(self) -> bool:
        """True when every encoder tensor comes from the checkpoint with the right shape."""
        return not self.missing and not self.mismatched

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def place(self, mapped: dict[str, torch.Tensor], key: str, value: Any, target: str | None) -> None:
        """File source tensor `key` of a key-map conversion: `mapped[target] = value`, or under `unexpected`
        when the map has no `target` for it or it is not a tensor."""
        if target is None:
            self.unexpected[key] = f"not in the {self.kind} key map"
        elif not isinstance(value, torch.Tensor):
            self.unexpected[key] = f"not a tensor ({type(value).__name__})"
        else:
            mapped[target] = value


def _rule(key: str, rules: tuple[tuple[str, str], ...]) -> str | None:
    for prefix, reason in rules:
        if key.startswith(prefix) or key == prefix.rstrip("."):
            return reason
    return None


def extract_state_dict(obj: Any) -> dict[str, Any]:
    """The tensor dict inside a loaded checkpoint: ``obj["state_dict"]`` (Lightning, LAION),
    ``obj["model"]`` (WavCaps) or ``obj`` itself."""
    if not isinstance(obj, dict):
        raise InputError(f"checkpoint holds a {type(obj).__name__}, not a state_dict")
    for wrapper in ("state_dict", "model"):
        inner = obj.get(wrapper)
        if isinstance(inner, dict) and inner and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return obj


def strip_module_prefix(state: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Remove (repeated) DataParallel/DDP ``module.`` prefixes."""
    out, stripped = {}, False
    for key, value in state.items():
        while key.startswith("module."):
            key, stripped = key[len("module."):], True
        out[key] = value
    return out, stripped


def detect_kind(keys: list[str]) -> str:
    """Key convention of a (``module.``-stripped) state dict."""
    for kind in ("htsat-lightning", "laion-clap", "wavcaps"):
        if any(k.startswith(ENCODER_PREFIX[kind]) for k in keys):
            return kind
    if "patch_embed.proj.weight" in keys:
        return "htsat"
    raise InputError(f"unrecognised checkpoint: no HTSAT keys (sed_model.*, audio_branch.*, audio_encoder.audio_enc.*, "
                     f"patch_embed.*); first keys: {sorted(keys)[:8]}")


def map_state_dict(state: dict[str, Any], kind: str | None = None) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename a foreign state dict (or checkpoint dict) to hade HTSAT encoder keys.

    Returns ``(mapped, report)``; ``report.matched``/``missing`` are filled by :func:`apply_state_dict`.
    """
    state, stripped = strip_module_prefix(extract_state_dict(state))
    if kind is None:
        kind = detect_kind(list(state))
    if kind not in KINDS:
        raise InputError(f"unknown checkpoint kind {kind!r}; known: {list(KINDS)}")
    report = ConversionReport(kind=kind, stripped_module_prefix=stripped)
    prefix = ENCODER_PREFIX[kind]
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if prefix and not key.startswith(prefix):
            report.unexpected[key] = _rule(key, _OTHER_RULES) or "outside the audio encoder; no counterpart in hade"
            continue
        name = key[len(prefix):]
        reason = _rule(name, _SKIP_RULES)
        if reason:
            report.skipped[key] = reason
            continue
        reason = _rule(name, _ENCODER_UNEXPECTED) or (None if prefix else _rule(name, _OTHER_RULES))
        if reason:
            report.unexpected[key] = reason
        elif not isinstance(value, torch.Tensor):
            report.unexpected[key] = f"not a tensor ({type(value).__name__})"
        else:
            mapped[name] = value
    return mapped, report


def apply_state_dict(encoder: nn.Module, mapped: dict[str, torch.Tensor], report: ConversionReport,
                     allow_partial: bool = False, what: str = "the HTSAT encoder",
                     refuse_unexpected: bool = False) -> ConversionReport:
    """Load mapped tensors into ``encoder``; refuses (InputError with the report, before loading anything)
    when encoder keys are missing or have another shape, or, with ``refuse_unexpected``, when the report
    holds checkpoint tensors with no place in it, unless ``allow_partial`` (then those keep their current
    values)."""
    own = encoder.state_dict()
    new_state = dict(own)
    for name, value in mapped.items():
        if name not in own:
            report.unexpected[name] = f"no such tensor in {what} (different architecture/preset?)"
        elif tuple(value.shape) != tuple(own[name].shape):
            report.mismatched[name] = f"checkpoint {tuple(value.shape)} vs encoder {tuple(own[name].shape)}"
        elif name.endswith(_DERIVED_BUFFERS[:2]) and not torch.equal(value.to(own[name].dtype), own[name]):
            report.mismatched[name] = "buffer differs from the one hade computes (different window/shift geometry)"
        else:
            report.matched.append(name)
            new_state[name] = value.to(own[name].dtype)
    for name in own:
        if name not in mapped:
            if name.endswith(_DERIVED_BUFFERS):
                report.recomputed.append(name)
            else:
                report.missing.append(name)
    left_over = sorted(report.unexpected) if refuse_unexpected else []
    if left_over and not allow_partial:
        raise InputError(f"refusing a partial load: {len(left_over)} checkpoint tensor(s) have no place in "
                         f"{what} (e.g. {left_over[:3]}; --allow-partial to load anyway):\n" + format_report(report))
    if not report.complete and not allow_partial:
        raise InputError(f"refusing a partial load of {what} (pass allow_partial=True / --allow-partial "
                         "to load anyway):\n" + format_report(report))
    encoder.load_state_dict(new_state, strict=True)
    report.loaded = True
    return report


def apply_converted(model: nn.Module, mapped: dict[str, torch.Tensor], report: ConversionReport,
                    allow_partial: bool, what: str) -> ConversionReport:
    """Load a whole converted checkpoint into the model built for it (`hade convert` of LAION-CLAP / WavCaps
    files, ClapModel folders, the DCASE 2025 baseline). Refuses, unless ``allow_partial``, when a model tensor
    is missing or misshapen (`apply_state_dict`) and when a checkpoint tensor has no place in the model, both
    named in one report: a converted model that silently dropped part of its checkpoint would score
    differently from the original."""
    extra = sorted(set(mapped) - set(model.state_dict()))
    for name in extra:
        report.unexpected[name] = "no such tensor in the converted model (a part hade did not build)"
    apply_state_dict(model, {k: v for k, v in mapped.items() if k not in extra}, report, allow_partial, what=what,
                     refuse_unexpected=True)
    return report


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file without unpickling code (safetensors or ``torch.load(weights_only=True)``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, RuntimeError) as e:
            raise InputError(f"{path}: truncated or corrupt safetensors file "
                             f"({' '.join(str(e).split())[:300]})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = " ".join(str(e).split())[:300]
        raise InputError(f"{path}: refused to unpickle code (weights_only=True): {first}. If you trust the file, "
                         f"re-save its state_dict (e.g. as .safetensors) and convert that.") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise InputError(f"{path}: not a readable torch checkpoint: {' '.join(str(e).split())[:300]}") from None


def load_audio_checkpoint(encoder: nn.Module, path: str | Path, allow_partial: bool = False,
                          kind: str | None = None) -> ConversionReport:
    """Load the HTSAT weights of checkpoint ``path`` into ``encoder`` (see module docstring)."""
    mapped, report = map_state_dict(read_checkpoint(path), kind)
    report.source = str(path)
    return apply_state_dict(encoder, mapped, report, allow_partial)


def format_report(report: ConversionReport, limit: int = 12) -> str:
    """Human-readable summary; long lists are cut to ``limit`` entries each."""
    def cut(items: list[str]) -> str:
        more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
        return ", ".join(items[:limit]) + more

    def by_reason(entries: dict[str, str]) -> list[str]:
        groups: dict[str, list[str]] = {}
        for key, reason in entries.items():
            groups.setdefault(reason, []).append(key)
        return [f"    - {len(keys)} key(s): {reason}: {cut(keys)}" for reason, keys in groups.items()]

    lines = [f"checkpoint kind: {report.kind}" + (f" ({report.source})" if report.source else ""),
             f"  matched: {len(report.matched)} encoder tensors" + ("; stripped 'module.' prefix"
                                                                    if report.stripped_module_prefix else "")]
    if report.missing:
        lines.append(f"  MISSING ({len(report.missing)}): {cut(report.missing)}")
    if report.mismatched:
        lines.append(f"  MISMATCHED ({len(report.mismatched)}):")
        lines += [f"    - {k}: {v}" for k, v in list(report.mismatched.items())[:limit]]
    if report.recomputed:
        lines.append(f"  recomputed by hade (not in checkpoint): {len(report.recomputed)} buffers")
    if report.scalars:
        lines.append("  scalars: " + ", ".join(f"{k}={v:.6g}" for k, v in report.scalars.items()))
    if report.skipped:
        lines.append(f"  skipped ({len(report.skipped)}):")
        lines += by_reason(report.skipped)
    if report.unexpected:
        lines.append(f"  unexpected, not loaded ({len(report.unexpected)}):")
        lines += by_reason(report.unexpected)
    lines.append("  loaded: " + ("yes" if report.loaded else "no") + ("" if report.complete else " (PARTIAL)"))
    return "\n".join(lines)


__all__ = ["ConversionReport", "KINDS", "LAION_FRONT_END", "apply_state_dict",
           "detect_kind", "extract_state_dict", "format_report",
           "load_audio_checkpoint", "map_state_dict", "read_checkpoint", "strip_module_prefix"]
