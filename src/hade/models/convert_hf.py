"""Hugging Face ``transformers.ClapModel`` folders -> a hade ``dp`` RetrievalModel that scores as the original.

A folder written by ``ClapModel.save_pretrained`` (or downloaded from the hub, e.g. the unfused LAION
releases) holds ``config.json`` (``architectures: ["ClapModel"]``, ``audio_config``, ``text_config``), the
weights (``model.safetensors``, its shards, or ``pytorch_model.bin``), usually the RoBERTa tokenizer
(``vocab.json`` + ``merges.txt`` or ``tokenizer.json``) and ``preprocessor_config.json`` (the
``ClapFeatureExtractor``'s front end).

The conversion reads the architecture from ``audio_config`` (HTSAT-tiny, -base or any other unfused
geometry: patch width, depths, heads, window, spectrogram size, mel bins) and ``text_config`` (RoBERTa), maps
every tensor through the explicit key map below (transformers' ``ClapAudioModel`` names -> hade's HTSAT names;
separate query/key/value -> one ``qkv``), and builds a ``dp`` model: ``ClapProjectionLayer`` is
Linear-ReLU-Linear as DP's projection, the text vector is RoBERTa's pooler output, and ``exp(logit_scale_a)``
becomes ``head_options.logit_scale``. The front end comes from ``preprocessor_config.json`` (sampling rate,
window, hop, mel bins, frequency range), else LAION's (48 kHz, hop 480, 50-14 000 Hz). Fusion configs
(``enable_fusion: true``) are refused. As for LAION-CLAP and WavCaps files (:mod:`hade.models.convert_full`),
a missing, mis-shaped or left-over tensor refuses the load unless ``allow_partial``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hade.config import ModelConfig
from hade.errors import InputError
from hade.models.convert import LAION_FRONT_END, ConversionReport, apply_converted, read_checkpoint

KIND = "hf-clap"
ARCHITECTURE = "ClapModel"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SHARD_INDEX = "model.safetensors.index.json"
_AUDIO = "audio_model.audio_encoder."
# ClapAudioLayer module or tensor (after `layers.{s}.blocks.{b}.`) -> hade SwinTransformerBlock module or tensor
_BLOCK_MAP = {
    "layernorm_before": "norm1",
    "attention.self.relative_position_bias_table": "attn.relative_position_bias_table",
    "attention.self.relative_position_index": "attn.relative_position_index",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
# hade's WindowAttention has one qkv Linear; transformers has three, concatenated in this order
_QKV = ("query", "key", "value")
# ClapAudioEncoder module (outside the blocks) -> hade HTSATEncoder module
_ENCODER_MAP = {"batch_norm": "bn0", "patch_embed.proj": "patch_embed.proj", "patch_embed.norm": "patch_embed.norm",
                "norm": "norm"}
# top-level ClapModel prefixes -> RetrievalModel prefixes
_PREFIX_MAP = (("text_model.", "text_encoder.bert."),
               ("audio_projection.linear1.", "head.audio_proj.0."), ("audio_projection.linear2.", "head.audio_proj.2."),
               ("text_projection.linear1.", "head.text_proj.0."), ("text_projection.linear2.", "head.text_proj.2."))
_TEXT_DERIVED = ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids")
_BLOCK_KEY = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.(.+)\.(\w+)$")
_DOWNSAMPLE_KEY = re.compile(r"layers\.(\d+)\.downsample\.(norm|reduction)\.(\w+)$")
# ClapTextConfig fields that a RobertaConfig takes as they are
_TEXT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                "type_vocab_size", "layer_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id")
# preprocessor_config.json (ClapFeatureExtractor) -> HTSATConfig front-end fields
_FEATURE_FIELDS = {"sampling_rate": "sample_rate", "fft_window_size": "n_fft", "hop_length": "hop_length",
                   "feature_size": "mel_bins", "frequency_min": "fmin", "frequency_max": "fmax"}


@dataclass
class HFClapFolder:
    """What a ClapModel folder says about itself: its path, the parsed ``ClapConfig`` (transformers' defaults
    filled in), the weights file(s), the ``ClapFeatureExtractor`` settings (None without
    preprocessor_config.json) and the folder holding its tokenizer (None when it has none)."""

    path: Path
    config: Any
    weights: list[Path]
    features: dict[str, Any] | None
    tokenizer_dir: Path | None


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{file}: unreadable ({' '.join(str(e).split())[:200]}); expected the JSON that "
                         "save_pretrained writes") from None


def is_hf_clap_folder(path: str | Path) -> bool:
    """True when `path` is a folder whose config.json describes a transformers ``ClapModel``."""
    file = Path(path) / "config.json"
    if not file.is_file():
        return False
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and (ARCHITECTURE in (data.get("architectures") or [])
                                       or data.get("model_type") == "clap")


def _weight_files(path: Path) -> list[Path]:
    index = path / _SHARD_INDEX
    if index.is_file():
        data = _read_json(index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict):
            raise InputError(f"{index}: no 'weight_map'; expected the index that save_pretrained writes")
        return [path / name for name in sorted(set(weight_map.values()))]
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return [path / name]
    raise InputError(f"{path}: a ClapModel folder without weights (expected {' or '.join(WEIGHT_FILES)})")


def _tokenizer_dir(path: Path) -> Path | None:
    has = {name for name in ("tokenizer.json", "vocab.json", "merges.txt") if (path / name).is_file()}
    return path if "tokenizer.json" in has or {"vocab.json", "merges.txt"} <= has else None


def read_hf_clap_folder(path: str | Path) -> HFClapFolder:
    """Parse a ClapModel folder; InputError naming the file for a config that is not an unfused ClapModel."""
    path = Path(path).expanduser()
    if not is_hf_clap_folder(path):
        raise InputError(f"{path}: not a Hugging Face ClapModel folder (expected config.json with "
                         f"architectures [\"{ARCHITECTURE}\"])")
    from transformers import ClapConfig

    from hade.models.encoders.text_bert import _quiet_transformers

    _quiet_transformers()
    data = _read_json(path / "config.json")
    try:
        config = ClapConfig.from_dict(data)
    except Exception as e:  # noqa: BLE001 - huggingface_hub's strict dataclasses raise their own types
        raise InputError(f"{path / 'config.json'}: not a usable ClapConfig ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:300]})") from None
    if config.audio_config.enable_fusion:
        raise InputError(f"{path / 'config.json'}: audio_config.enable_fusion is true (fusion type "
                         f"{config.audio_config.fusion_type!r}); hade converts the unfused CLAP models only "
                         "(e.g. laion/clap-htsat-unfused, laion/larger_clap_general)")
    features = path / "preprocessor_config.json"
    return HFClapFolder(path, config, _weight_files(path), _read_json(features) if features.is_file() else None,
                        _tokenizer_dir(path))


def _refuse(field: str, value: Any, wanted: str) -> InputError:
    return InputError(f"config.json: audio_config.{field} = {value!r}; hade's HTSAT needs {wanted}")


def _pair(value: Any) -> int:
    """An int from `value` or a pair of equal ints; -1 for anything else."""
    if isinstance(value, int):
        return value
    values = list(value) if isinstance(value, (list, tuple)) else []
    return int(values[0]) if len(values) == 2 and values[0] == values[1] else -1


def _check_audio(audio: Any) -> None:
    """Refuse the audio_config variants hade's HTSAT has no switch for (they would compute something else)."""
    patch, stride = _pair(audio.patch_size), _pair(audio.patch_stride)
    if patch <= 0 or patch != stride:
        raise _refuse("patch_size/patch_stride", (audio.patch_size, audio.patch_stride),
                      "square, non-overlapping patches (patch_size == patch_stride)")
    widest = audio.patch_embeds_hidden_size * 2 ** (len(audio.depths) - 1)
    checks = (("hidden_act", audio.hidden_act, "gelu", "gelu"), ("layer_norm_eps", audio.layer_norm_eps, 1e-5, "1e-5"),
              ("enable_patch_layer_norm", audio.enable_patch_layer_norm, True, "true"),
              ("flatten_patch_embeds", audio.flatten_patch_embeds, True, "true"),
              ("patch_embed_input_channels", audio.patch_embed_input_channels, 1, "1"),
              ("projection_hidden_act", audio.projection_hidden_act, "relu", "relu (DP's projection)"),
              ("hidden_size", audio.hidden_size, widest, f"patch_embeds_hidden_size * 2**(stages - 1) = {widest}"))
    for field_, value, wanted, text in checks:
        if value != wanted:
            raise _refuse(field_, value, text)


def _front_end(folder: HFClapFolder, report: ConversionReport) -> dict[str, Any]:
    """HTSATConfig front-end fields: preprocessor_config.json's, else LAION's (noted in the report)."""
    if folder.features is None:
        laion = {k: v for k, v in LAION_FRONT_END.items() if k != "mel_bins"}  # audio_config has the mel bins
        report.skipped["preprocessor_config.json"] = ("absent: LAION's front end assumed "
                                                      f"({', '.join(f'{k}={v}' for k, v in laion.items())})")
        return laion
    from transformers import ClapFeatureExtractor

    defaults = ClapFeatureExtractor().to_dict()
    settings = {**defaults, **folder.features}
    truncation = settings.get("truncation")
    if truncation != "rand_trunc":
        report.skipped["preprocessor_config.json:truncation"] = (
            f"{truncation!r}: the unfused models were trained with rand_trunc (Slaney mel); hade computes that")
    front = {field_: settings[key] for key, field_ in _FEATURE_FIELDS.items()}
    if settings.get("top_db") is not None:
        raise InputError(f"{folder.path / 'preprocessor_config.json'}: top_db = {settings['top_db']!r}; hade's "
                         "log-mel has no top_db clamp (ClapFeatureExtractor's default is null)")
    return {k: (float(v) if k in ("fmin", "fmax") else int(v)) for k, v in front.items()}


def hf_audio_overrides(folder: HFClapFolder, report: ConversionReport) -> dict[str, Any]:
    """HTSATConfig overrides of the ``htsat-tiny`` preset that `folder`'s audio_config and front end name."""
    from hade.models.encoders.htsat import HTSAT_PRESETS

    audio = folder.config.audio_config
    _check_audio(audio)
    found = {"embed_dim": int(audio.patch_embeds_hidden_size), "depths": [int(d) for d in audio.depths],
             "num_heads": [int(h) for h in audio.num_attention_heads], "window_size": int(audio.window_size),
             "mel_bins": int(audio.num_mel_bins), "spec_size": int(audio.spec_size),
             "patch_size": _pair(audio.patch_size), "mlp_ratio": float(audio.mlp_ratio),
             "qkv_bias": bool(audio.qkv_bias), **_front_end(folder, report)}
    if found["mel_bins"] != audio.num_mel_bins:
        raise InputError(f"{folder.path / 'preprocessor_config.json'}: feature_size {found['mel_bins']} but "
                         f"audio_config.num_mel_bins {audio.num_mel_bins}; the folder mixes two models")
    preset = HTSAT_PRESETS["htsat-tiny"].to_dict()
    return {k: v for k, v in found.items() if preset.get(k) != v}


def hf_text_config(folder: HFClapFolder) -> dict[str, Any]:
    """The RobertaConfig dict of `folder`'s ClapTextModel (transformers' ClapTextModel is RoBERTa's layout)."""
    from hade.models.encoders.text_bert import text_config_from_dict

    text = folder.config.text_config
    config = text_config_from_dict({"model_type": "roberta", **{k: getattr(text, k) for k in _TEXT_FIELDS}})
    return json.loads(config.to_json_string())  # as a saved checkpoint's config.json holds it (str label keys)


def _audio_name(name: str) -> str | None:
    """hade HTSAT name of a ClapAudioEncoder tensor (relative to ``audio_model.audio_encoder.``), None when the
    key map has none (q/k/v are handled apart)."""
    block = _BLOCK_KEY.match(name)
    if block:
        stage, index, module, param = block.groups()
        tensor = _BLOCK_MAP.get(f"{module}.{param}")  # a parameter or buffer of its own (attention's tables)
        if tensor is not None:
            return f"layers.{stage}.blocks.{index}.{tensor}"
        target = _BLOCK_MAP.get(module)
        return None if target is None else f"layers.{stage}.blocks.{index}.{target}.{param}"
    if _DOWNSAMPLE_KEY.match(name):
        return name
    module, _, param = name.rpartition(".")
    target = _ENCODER_MAP.get(module)
    return None if target is None else f"{target}.{param}"


def _qkv_part(name: str) -> tuple[str, int] | None:
    """(hade qkv name, position) of a ClapAudioSelfAttention query/key/value tensor, else None."""
    block = _BLOCK_KEY.match(name)
    if not block:
        return None
    stage, index, module, param = block.groups()
    if not module.startswith("attention.self.") or module.rsplit(".", 1)[-1] not in _QKV:
        return None
    return f"layers.{stage}.blocks.{index}.attn.qkv.{param}", _QKV.index(module.rsplit(".", 1)[-1])


def _map_scalar(key: str, value: torch.Tensor, report: ConversionReport) -> bool:
    if key not in ("logit_scale_a", "logit_scale_t") or value.numel() != 1:
        return False
    report.scalars["logit_scale" if key == "logit_scale_a" else "logit_scale_t"] = float(value.float().exp())
    report.skipped[key] = "learned scale: stored as head_options.logit_scale (see scalars)"
    return True


def _map_audio_key(key: str, value: torch.Tensor, report: ConversionReport, mapped: dict[str, torch.Tensor],
                   qkv: dict[str, dict[int, tuple[str, torch.Tensor]]]) -> None:
    name = key[len(_AUDIO):]
    part = _qkv_part(name)
    if part is not None:
        qkv.setdefault(part[0], {})[part[1]] = (key, value)
        return
    target = _audio_name(name)
    if target is None:
        report.unexpected[key] = "ClapAudioEncoder tensor without a counterpart in hade's HTSAT (fusion or a new part)"
    else:
        mapped["audio_encoder." + target] = value


def map_hf_state_dict(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename a ClapModel state dict to RetrievalModel names (``audio_encoder.*``, ``text_encoder.bert.*``,
    ``head.audio_proj.*``, ``head.text_proj.*``); the learned scales go to ``report.scalars``."""
    report = ConversionReport(kind=KIND)
    mapped: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[int, tuple[str, torch.Tensor]]] = {}  # hade qkv name -> {position: (key, tensor)}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            report.unexpected[key] = f"not a tensor ({type(value).__name__})"
        elif _map_scalar(key, value, report):
            continue
        elif key in _TEXT_DERIVED:
            report.skipped[key] = "derived buffer: transformers recomputes it"
        elif key.startswith(_AUDIO):
            _map_audio_key(key, value, report, mapped, qkv)
        else:
            target = next((new + key[len(old):] for old, new in _PREFIX_MAP if key.startswith(old)), None)
            if target is None:
                report.unexpected[key] = "outside the ClapModel parts hade converts; no counterpart in hade"
            else:
                mapped[target] = value
    for name, parts in qkv.items():
        if len(parts) == len(_QKV):
            mapped["audio_encoder." + name] = torch.cat([parts[i][1] for i in range(len(_QKV))], dim=0)
        else:  # the qkv tensor stays missing (apply_state_dict refuses); say which parts were there
            for key, _ in parts.values():
                report.unexpected[key] = f"query/key/value triple incomplete: audio_encoder.{name} not built"
    if "logit_scale" not in report.scalars:
        raise InputError("ClapModel weights without logit_scale_a: not a complete ClapModel")
    return mapped, report


def read_hf_weights(folder: HFClapFolder) -> dict[str, Any]:
    """Every tensor of the folder's weight file(s), read without unpickling code."""
    state: dict[str, Any] = {}
    for file in folder.weights:
        state.update(read_checkpoint(file))
    return state


def hf_model_config(folder: HFClapFolder, report: ConversionReport, tokenizer_dir: Path) -> ModelConfig:
    """The ModelConfig of the converted model: HTSAT from audio_config and the folder's front end, RoBERTa from
    text_config with its pooler output, a `dp` head of the projection width holding exp(logit_scale_a), and
    the feature extractor's clip length (``max_length_s``, 10 s) as ``clip_seconds``."""
    text = hf_text_config(folder)
    # RoBERTa positions start after the padding id; transformers' tokenizer does not truncate by default, so
    # the longest caption the position table holds is the limit (LAION trained on 77 tokens)
    max_tokens = int(text["max_position_embeddings"]) - int(text.get("pad_token_id") or 0) - 1
    clip_seconds = float((folder.features or {}).get("max_length_s", 10))
    scale = {"logit_scale": report.scalars["logit_scale"]} if "logit_scale" in report.scalars else {}
    return ModelConfig(audio_encoder="htsat-tiny", audio_overrides=hf_audio_overrides(folder, report),
                       text_encoder=str(tokenizer_dir), text_config=text, text_pooling="pooler",
                       max_text_tokens=max_tokens, head="dp", head_options=scale,
                       embed_dim=int(folder.config.projection_dim), clip_seconds=clip_seconds)


def hf_folder_config(path: str | Path) -> ModelConfig:
    """The ModelConfig that converting ClapModel folder `path` gives, without reading its weights (the learned
    scale, which only the weights hold, is left out of head_options)."""
    folder = read_hf_clap_folder(path)
    return hf_model_config(folder, ConversionReport(kind=KIND), _resolve_tokenizer(folder, None))


def _resolve_tokenizer(folder: HFClapFolder, tokenizer_dir: str | Path | None) -> Path:
    if tokenizer_dir is not None:
        return Path(tokenizer_dir).expanduser()
    if folder.tokenizer_dir is None:
        raise InputError(f"{folder.path}: no tokenizer files (tokenizer.json, or vocab.json + merges.txt of RoBERTa); "
                         "copy them from the model's hub repo into the folder, or pass --tokenizer DIR")
    return folder.tokenizer_dir


def hf_conversion(path: str | Path, tokenizer_dir: str | Path | None = None
                  ) -> tuple[dict[str, torch.Tensor], ConversionReport, ModelConfig, Path]:
    """(mapped tensors, report, ModelConfig, tokenizer folder) of ClapModel folder `path`, no model built."""
    folder = read_hf_clap_folder(path)
    mapped, report = map_hf_state_dict(read_hf_weights(folder))
    report.source = str(folder.path)
    tokenizer = _resolve_tokenizer(folder, tokenizer_dir)
    return mapped, report, hf_model_config(folder, report, tokenizer), tokenizer


def convert_hf_clap(path: str | Path, tokenizer_dir: str | Path | None = None, allow_partial: bool = False):
    """A transformers ClapModel folder -> (a ``dp`` RetrievalModel in eval mode that scores as the original,
    ConversionReport). The tokenizer is the folder's own unless `tokenizer_dir` names another local folder.
    Refuses fusion configs, and (unless ``allow_partial``) a missing, mis-shaped or left-over tensor."""
    from hade.models.convert_full import _check_tokenizer_family
    from hade.models.factory import create_model

    mapped, report, config, tokenizer = hf_conversion(path, tokenizer_dir)
    model = create_model(config, tokenizer_dir=str(tokenizer))
    _check_tokenizer_family(model.tokenizer, config.text_config, "laion-clap", tokenizer)
    apply_converted(model, mapped, report, allow_partial, what="the converted ClapModel")
    return model.eval(), report


__all__ = ["ARCHITECTURE", "HFClapFolder", "KIND", "convert_hf_clap", "hf_audio_overrides", "hf_conversion",
           "hf_folder_config", "hf_model_config", "hf_text_config", "is_hf_clap_folder", "map_hf_state_dict", "read_hf_clap_folder"]
