"""LAION-CLAP's reference HTSAT (``laion_clap.clap_module.htsat``), for equality tests and speed benchmarks.

A test and benchmark helper, kept out of the hade package because it patches ``sys.modules``: used by
benchmarks/encoder.py and tests/models/test_htsat_reference.py (both load it by path).

``laion_clap`` is optional (install it with ``pip install --no-deps laion_clap torchlibrosa librosa ...``;
the Makefile does). Its ``__init__`` imports the whole training stack (torchvision, h5py, wget, ...), so the
HTSAT module is imported without it: the packages are registered as namespace stubs and
``clap_module.utils`` is replaced by a module holding the reference's own ``do_mixup``/``interpolate``
(and, for the whole ``CLAP`` model, ``pad_framewise_output``/``freeze_batch_norm_2d``) functions compiled
from its source file — the reference code itself runs unchanged.

The whole model (``laion_clap.clap_module.model.CLAP``, what ``CLAP_Module`` wraps) is built with a small
``RobertaConfig`` in place of the hub download of roberta-base (``RobertaModel.from_pretrained`` is patched
while it is built), for the complete-checkpoint equality test and the text row of benchmarks/encoder.py.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from hade.models.convert import LAION_FRONT_END, apply_state_dict, map_state_dict
from hade.models.encoders.htsat import HTSATEncoder, build_htsat

REFERENCE_MODULE = "laion_clap.clap_module.htsat"
MODEL_MODULE = "laion_clap.clap_module.model"
# the utils functions the reference modules import (utils.py itself imports torchvision, h5py, ...)
_UTILS_FUNCTIONS = ("do_mixup", "interpolate", "pad_framewise_output", "freeze_batch_norm_2d")
# LAION-CLAP's HTSAT-tiny audio configuration (48 kHz, 10 s clips).
TINY_AUDIO_CONFIG = dict(model_name="tiny", class_num=527, sample_rate=48000, window_size=1024, hop_size=480,
                         mel_bins=64, fmin=50, fmax=14000, clip_samples=480000)


class ReferenceUnavailable(ImportError):
    """laion_clap (or what its HTSAT module imports) is not installed; the message says what to install."""


def import_reference_htsat(module: str = REFERENCE_MODULE) -> types.ModuleType:
    """The module ``laion_clap.clap_module.htsat`` (or `module`, e.g. :data:`MODEL_MODULE`); raises
    :class:`ReferenceUnavailable` when missing."""
    if module in sys.modules:
        return sys.modules[module]
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or not spec.submodule_search_locations:
        raise ReferenceUnavailable("laion_clap is not installed (pip install --no-deps laion_clap==1.1.7 "
                                   "torchlibrosa librosa ...; see the Makefile)")
    try:
        import librosa.filters  # noqa: F401  (torchlibrosa's filterbank)
        import torchlibrosa  # noqa: F401
    except ImportError as e:
        raise ReferenceUnavailable(f"the reference HTSAT needs torchlibrosa and librosa: {e}") from e
    root = Path(next(iter(spec.submodule_search_locations)))
    names = ("laion_clap", "laion_clap.clap_module", "laion_clap.clap_module.utils")
    saved = {n: sys.modules.get(n) for n in names}
    try:
        for name, path in (("laion_clap", root), ("laion_clap.clap_module", root / "clap_module")):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
        utils = types.ModuleType("laion_clap.clap_module.utils")
        source = root / "clap_module" / "utils.py"
        tree = ast.parse(source.read_text())
        funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in _UTILS_FUNCTIONS]
        utils.__dict__.update(nn=nn, torch=torch, FrozenBatchNorm2d=nn.BatchNorm2d)
        exec(compile(ast.Module(body=funcs, type_ignores=[]), str(source), "exec"), utils.__dict__)
        sys.modules[utils.__name__] = utils
        return importlib.import_module(module)
    except ImportError as e:
        raise ReferenceUnavailable(f"cannot import laion_clap's HTSAT module: {e}") from e
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def reference_tiny(seed: int = 0) -> nn.Module:
    """LAION-CLAP's HTSAT-tiny (eval mode) with seeded random weights, and random non-trivial BatchNorm
    statistics and LayerNorm affine parameters (so that a wrong norm placement cannot pass unnoticed)."""
    ref = import_reference_htsat()
    torch.manual_seed(seed)
    model = ref.HTSAT_Swin_Transformer(spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=527,
                                       embed_dim=96, depths=[2, 2, 6, 2], num_heads=[4, 8, 16, 32], window_size=8,
                                       config=types.SimpleNamespace(**TINY_AUDIO_CONFIG))
    with torch.no_grad():
        model.bn0.running_mean.uniform_(-30.0, 0.0)
        model.bn0.running_var.uniform_(50.0, 200.0)
        model.bn0.weight.uniform_(0.5, 1.5)
        model.bn0.bias.uniform_(-0.5, 0.5)
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


def hade_from_reference(model: nn.Module):
    """hade's encoder (HTSAT-tiny with LAION's front end, eval mode) holding `model`'s weights, loaded through
    the LAION-CLAP key map exactly as `hade convert` loads a checkpoint; -> (encoder, load report)."""
    encoder: HTSATEncoder = build_htsat("htsat-tiny", **LAION_FRONT_END).eval()
    state = {f"module.audio_branch.{k}": v for k, v in model.state_dict().items()}
    mapped, report = map_state_dict({"state_dict": state})
    apply_state_dict(encoder, mapped, report)
    return encoder, report


def run_reference(model: nn.Module, waveform: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """waveform [B, T] at 48 kHz -> (the four stage outputs [B, L_s, C_s] (the last after the final norm, as
    hade's), the pooled embedding [B, 768]) of the reference model, without gradients."""
    stages: list[torch.Tensor] = []

    def keep(_m, _i, out):
        stages.append(out[0] if isinstance(out, tuple) else out)

    hooks = [layer.blocks[-1].register_forward_hook(keep) for layer in model.layers]
    try:
        with torch.no_grad():
            out = model({"waveform": waveform}, device=waveform.device)
            stages[-1] = model.norm(stages[-1])
    finally:
        for h in hooks:
            h.remove()
    return stages, out["embedding"]


# LAION-CLAP's audio configuration (HTSAT-tiny, 48 kHz, 10 s) as CLAP's audio_cfg
CLAP_AUDIO_CFG = dict(model_type="HTSAT", model_name="tiny", sample_rate=48000, audio_length=1024, window_size=1024,
                      hop_size=480, fmin=50, fmax=14000, class_num=527, mel_bins=64, clip_samples=480000)
# a small RoBERTa: LAION's text projection is Linear(768, 512), so the width stays 768; 2 blocks, short FFN
SMALL_ROBERTA = dict(hidden_size=768, num_hidden_layers=2, num_attention_heads=12, intermediate_size=256,
                     max_position_embeddings=80, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                     eos_token_id=2, type_vocab_size=1)


def _word_merges(words: list[str]) -> list[str]:
    """BPE merges that build each word (and its space-prefixed form) left to right, so that captions made of
    these words take about as many tokens as roberta-base gives them (one or two per word)."""
    merges: list[str] = []
    for word in dict.fromkeys(words):
        for form in (word, "\u0120" + word):
            for i in range(2, len(form) + 1):
                merge = f"{form[:i - 1]} {form[i - 1]}"
                if merge not in merges:
                    merges.append(merge)
    return merges


def write_tiny_roberta_tokenizer(folder: Path, words: list[str] | None = None) -> Path:
    """A byte-level BPE tokenizer in roberta-base's file layout (vocab.json, merges.txt) with 268 tokens:
    the 256 byte symbols, a few merges and RoBERTa's special tokens (<pad> = 1); `words` add merges that make
    each of them one token (the benchmark's captions get realistic lengths)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for c in cs:
        vocab[chr(c)] = len(vocab)
    merges = ["\u0120 d", "o g", "\u0120d og", "a r", "k s", "\u0120 b", "\u0120b ar"] if words is None \
        else _word_merges(words)
    for m in merges:
        vocab.setdefault("".join(m.split()), len(vocab))
    vocab["<mask>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer",
                                                              "model_max_length": 77}))
    return folder


def perturb_norms(model: nn.Module, input_bn: nn.Module) -> None:
    """Give a random-weight model non-trivial normalisation: the audio input BatchNorm's running statistics
    in a log-mel range, every LayerNorm's affine parameters away from 1 and 0 (so that an equality test would
    notice a swapped or missing norm). In place, under no_grad by the caller."""
    input_bn.running_mean.uniform_(-30.0, 0.0)
    input_bn.running_var.uniform_(50.0, 200.0)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.1, 0.1)


def reference_clap(seed: int = 0, vocab_size: int = 268, audio: str = "tiny",
                   text_overrides: dict | None = None) -> nn.Module:
    """LAION-CLAP's ``CLAP`` (non-fusion, HTSAT-`audio` + a small RoBERTa, eval mode) with seeded random weights,
    non-trivial norm statistics and logit scales; nothing is downloaded. `text_overrides` change the RoBERTa
    (e.g. ``{"num_hidden_layers": 12, "intermediate_size": 3072}``: roberta-base's blocks)."""
    from transformers import RobertaConfig, RobertaModel

    ref = import_reference_htsat(MODEL_MODULE)
    torch.manual_seed(seed)
    small = RobertaConfig(vocab_size=vocab_size, **{**SMALL_ROBERTA, **(text_overrides or {})})
    with mock.patch.object(ref.RobertaModel, "from_pretrained", lambda *a, **k: RobertaModel(small)):
        model = ref.CLAP(embed_dim=768 if audio == "tiny" else 1024, audio_cfg={**CLAP_AUDIO_CFG, "model_name": audio},
                         text_cfg=dict(context_length=77, vocab_size=vocab_size, width=768, heads=12, layers=2,
                                       model_type="roberta"), joint_embed_shape=512)
    with torch.no_grad():
        perturb_norms(model, model.audio_branch.bn0)
        model.logit_scale_a.fill_(3.1)
        model.logit_scale_t.fill_(2.7)
    return model.eval()


def clap_state_dict(model: nn.Module) -> dict:
    """The checkpoint layout of LAION's releases: ``{"state_dict": {"module.<name>": tensor}, "epoch": ...}``."""
    return {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 1}


def clap_text_embedding(model: nn.Module, tokenizer, captions: list[str]) -> torch.Tensor:
    """[B, 512] text embeddings as CLAP_Module.get_text_embedding computes them (padding to 77 tokens)."""
    batch = tokenizer(captions, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        return model.get_text_embedding({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})


def clap_audio_embedding(model: nn.Module, waveform: torch.Tensor) -> torch.Tensor:
    """waveform [B, T] at 48 kHz -> [B, 512] audio embeddings as CLAP's get_audio_embedding (non-fusion)."""
    with torch.no_grad():
        return model.get_audio_embedding([{"waveform": w} for w in waveform])


__all__ = ["CLAP_AUDIO_CFG", "ReferenceUnavailable", "SMALL_ROBERTA", "TINY_AUDIO_CONFIG", "clap_audio_embedding",
           "clap_state_dict", "clap_text_embedding", "hade_from_reference", "import_reference_htsat",
           "reference_clap", "reference_tiny", "run_reference", "write_tiny_roberta_tokenizer"]
