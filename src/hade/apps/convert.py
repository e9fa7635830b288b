"""`hade convert`: the command line of foreign-checkpoint conversion (hade.models.convert's key maps,
hade.checkpoint's writing).

Two modes:
* audio encoder only (default): the HTSAT of an HTS-AT / LAION-CLAP / WavCaps checkpoint, or a PaSST
  AudioSet checkpoint (``--audio-encoder passt-s``), goes into a new model whose text encoder (``--text-encoder``) and head (``--head``) start fresh;
* complete model (``--tokenizer DIR``): a LAION-CLAP (non-fusion) or WavCaps HTSAT-BERT checkpoint becomes a
  ``dp`` model that scores as the original (text tower, projections and learned scale included); DIR holds
  the original's tokenizer files (roberta-base / bert-base-uncased), never downloaded;
* a Hugging Face ``ClapModel`` folder (SRC is a folder): always the complete model, with the folder's own
  tokenizer files unless ``--tokenizer DIR`` names others (hade.models.convert_hf);
* the DCASE 2025 baseline's released ``.ckpt`` (PaSST + RoBERTa-large): with ``--tokenizer DIR``
  (roberta-large's files) the complete ``dp`` model (hade.models.convert_dcase), else its PaSST alone.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hade.errors import InputError
from hade.models.convert import KINDS, format_report
from hade.models.convert_audio import AUDIO_KINDS
from hade.models.convert_dcase import KIND as DCASE_KIND
from hade.models.convert_full import FULL_KINDS


def add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    """``hade convert SRC --out DIR [--tokenizer TOK [--text-overrides JSON]] [--audio-encoder htsat-tiny]
    [--text-encoder minilm] [--head dp] [--kind K] [--allow-partial]``."""
    p = subparsers.add_parser("convert",
                              help="convert an HTS-AT / LAION-CLAP / WavCaps / PaSST / BEATs checkpoint or a Hugging "
                                   "Face ClapModel folder to a hade checkpoint")
    p.add_argument("src", type=Path, help="foreign checkpoint (.ckpt/.pt/.pth via weights_only, or .safetensors), "
                                          "or a Hugging Face ClapModel folder (config.json + model.safetensors)")
    p.add_argument("--out", type=Path, required=True, help="hade checkpoint directory to write")
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="local folder with the original's tokenizer (roberta-base files for LAION-CLAP, "
                        "bert-base-uncased for WavCaps, roberta-large for the DCASE 2025 baseline): convert the "
                        "complete model, text tower and projections "
                        "included, into a 'dp' model that scores as the original")
    p.add_argument("--text-overrides", default=None,
                   help="with --tokenizer: JSON object of text config fields no tensor shape tells "
                        "(e.g. '{\"num_attention_heads\": 12}'); default: the tokenizer folder's config.json, "
                        "else roberta-base / bert-base-uncased values")
    p.add_argument("--audio-encoder", default=None,
                   help="audio encoder preset matching the checkpoint (default htsat-tiny; passt-s for PaSST, "
                        "passt-s-p16-s16 for the DCASE 2025 baseline, its default)")
    p.add_argument("--audio-overrides", default=None,
                   help="JSON object of the preset's config fields (e.g. HTSATConfig front end)")
    p.add_argument("--text-encoder", default="minilm", help="hade text encoder (the foreign text tower is not loaded)")
    p.add_argument("--head", default="dp", help="retrieval head (freshly initialised)")
    p.add_argument("--kind", choices=KINDS + AUDIO_KINDS, default=None, help="key convention (default: detected from the keys)")
    p.add_argument("--allow-partial", action="store_true", help="load even if encoder tensors are missing")
    p.add_argument("--force", action="store_true",
                   help="write --out even when it is a non-empty folder that is not a hade checkpoint (its contents "
                        "are replaced)")


def _json_object(text: str | None, flag: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{flag}: invalid JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise InputError(f"{flag} must be a JSON object")
    return value


def _convert_full(args: argparse.Namespace, replaced: str = "") -> int:
    from hade.models.convert import read_checkpoint
    from hade.models.convert_dcase import BASELINE_PRESET, convert_dcase, is_dcase_checkpoint
    from hade.models.convert_full import convert_full

    if args.kind is not None and args.kind not in (*FULL_KINDS, DCASE_KIND):
        raise InputError(f"--tokenizer converts complete {' / '.join((*FULL_KINDS, DCASE_KIND))} checkpoints; "
                         f"--kind {args.kind} holds an audio encoder only (drop --tokenizer)")
    obj = read_checkpoint(args.src)
    text_overrides = _json_object(args.text_overrides, "--text-overrides")
    if args.kind == DCASE_KIND or (args.kind is None and is_dcase_checkpoint(obj)):
        model, report = convert_dcase(obj, args.tokenizer, audio_encoder=args.audio_encoder or BASELINE_PRESET,
                                      audio_overrides=_json_object(args.audio_overrides, "--audio-overrides"),
                                      allow_partial=args.allow_partial, text_overrides=text_overrides)
    else:
        model, report = convert_full(obj, args.tokenizer, kind=args.kind, allow_partial=args.allow_partial,
                                     text_overrides=text_overrides)
    report.source = str(args.src)
    clips = f", {model.config.clip_seconds:g} s clips" if model.config.clip_seconds else ""
    return _write_complete(args, model, report, replaced, f"complete {report.kind} model: head dp, text pooling "
                           f"{model.config.text_pooling}, {model.sample_rate} Hz{clips}")


def _write_complete(args: argparse.Namespace, model, report, replaced: str, described: str) -> int:
    """Save a whole converted model with its conversion report, print the report and what was written."""
    from hade.checkpoint import save_model

    save_model(model, args.out, extra={"converted_from": str(args.src), "conversion": report.to_dict(),
                                       "complete": True})
    print(format_report(report))
    print(f"wrote {args.out}{replaced} ({described})")
    return 0


def claim_out(args: argparse.Namespace) -> str:
    """Refuse an --out that holds anything but a hade checkpoint (unless --force), before any work; the
    words that say what the written checkpoint replaced ("" for a new folder)."""
    from hade.checkpoint import CHECKPOINT_OUTPUT
    from hade.utils.outdir import Claim, claim_output_dir

    claim = claim_output_dir(args.out, CHECKPOINT_OUTPUT, force=getattr(args, "force", False))
    return {Claim.NEW: "", Claim.OWN: " (replaced the hade checkpoint that was there)",
            Claim.FORCED: " (--force: replaced what was there)"}[claim]


def _convert_hf(args: argparse.Namespace, replaced: str = "") -> int:
    from hade.models.convert_hf import convert_hf_clap

    if args.kind is not None or args.text_overrides or args.audio_overrides:
        raise InputError(f"{args.src}: a Hugging Face ClapModel folder names its own architecture; drop --kind, "
                         "--text-overrides and --audio-overrides")
    model, report = convert_hf_clap(args.src, args.tokenizer, allow_partial=args.allow_partial)
    return _write_complete(args, model, report, replaced, "complete Hugging Face ClapModel: head dp, text pooling "
                           f"{model.config.text_pooling}, {model.sample_rate} Hz, {model.config.clip_seconds:g} s clips")


def _default_audio_encoder(args: argparse.Namespace, state: dict[str, Any]) -> str:
    """The preset of a checkpoint converted without --audio-encoder: the DCASE 2025 baseline's PaSST for its
    checkpoint, else htsat-tiny."""
    from hade.models.convert_dcase import BASELINE_PRESET, is_dcase_checkpoint

    if args.kind == DCASE_KIND or (args.kind is None and is_dcase_checkpoint(state)):
        return BASELINE_PRESET
    return "htsat-tiny"


def cmd_convert(args: argparse.Namespace) -> int:
    """Run ``hade convert``; prints the report, returns the exit code."""
    from hade.checkpoint import convert_checkpoint
    from hade.config import ModelConfig
    from hade.models.convert import read_checkpoint
    from hade.models.convert_hf import is_hf_clap_folder

    replaced = claim_out(args)
    if is_hf_clap_folder(args.src):
        return _convert_hf(args, replaced)
    if args.src.is_dir():
        raise InputError(f"{args.src}: a folder, but not a Hugging Face ClapModel folder (its config.json must "
                         "name architectures [\"ClapModel\"]); give a checkpoint file or a ClapModel folder")
    if getattr(args, "tokenizer", None) is not None:
        return _convert_full(args, replaced)
    if getattr(args, "text_overrides", None):
        raise InputError("--text-overrides applies to complete conversions only (with --tokenizer)")
    overrides = _json_object(args.audio_overrides, "--audio-overrides")
    state = read_checkpoint(args.src)
    config = ModelConfig(audio_encoder=args.audio_encoder or _default_audio_encoder(args, state),
                         audio_overrides=overrides, text_encoder=args.text_encoder, head=args.head)
    report = convert_checkpoint(args.src, args.out, config, allow_partial=args.allow_partial, kind=args.kind,
                                state=state)
    print(format_report(report))
    print(f"wrote {args.out}{replaced}")
    if report.kind in (*FULL_KINDS, DCASE_KIND):
        print(f"note: only the audio encoder was converted; pass --tokenizer DIR to convert the complete {report.kind} "
              "model (text tower, projections and scale)")
    return 0


__all__ = ["add_convert_parser", "cmd_convert"]
