"""`hade models`: what a model can be built from: the retrieval heads (with their declared capabilities),
the audio encoder presets and the text encoders (as open_clip's `list_models()`); `--json` for scripts."""
from __future__ import annotations

import argparse
import inspect
import json
from dataclasses import fields
from typing import Any

from hade.apps.choices import TEXT_ENCODERS

# One line per head of HADE's tables and the baselines. A head registered later without a line here is
# described by the first line of its module's docstring, so adding a head needs no edit in this file.
HEAD_SUMMARIES = {
    "dp": "dot product of pooled text and audio vectors (the DP baseline)",
    "tha": "hierarchical alignment of HTSAT stages with BERT blocks (HADE 2.2); a re-ranker",
    "tha+dp": "THA + DP, scores summed",
    "dcr": "DP vectors read as K factors with decoupling, alignment and confidence-aware aggregation (HADE 2.3-2.4)",
    "tha+dcr": "THA + DCR, scores summed (HADE's full model)",
    "dp+ld": "DP with the inter-factor decoupling loss L_D (Table 3)",
    "dp+ld+la": "DP with L_D and the intra-factor alignment loss L_A (Table 3)",
    "dp+ld+la+ca": "DP with L_D, L_A and confidence-aware aggregation: the same head as dcr (Table 3)",
    "coatt-single": "single co-attention layer between audio segments and words (Sun et al.)",
    "coatt-stacked": "stacked co-attention layers (Sun et al.)",
    "coatt-iterated": "iterated co-attention with shared weights (Sun et al.)",
    "diffatr": "DP features + a diffusion generator of query-to-candidate distributions (DiffATR)",
    "hci": "hierarchical cross-modal interaction at frame, segment and clip level (Xin & Zou)",
    "hci+ac": "HCI enhanced with auxiliary (machine-generated) captions of the audio",
}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `hade models` to a sub-parser set."""
    p = sub.add_parser("models", help="list the retrieval heads, audio encoder presets and text encoders",
                       description="List what `--head`, `--audio-encoder` and `--text-encoder` accept. Audio "
                                   "encoder presets are JSON files: add yours to a folder named by the "
                                   "environment variable HADE_PRESET_PATH.")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def _module_summary(obj: Any) -> str:
    doc = inspect.getdoc(inspect.getmodule(obj)) or ""
    return doc.splitlines()[0] if doc else ""


def head_info(name: str) -> dict[str, Any]:
    """{"name", "capabilities": {flag: bool, "explanations": [...]}, "description"} of one registered head."""
    from hade.models.heads import PROBE_DIMS, PROBE_LEVELS, build_head

    head = build_head(name, PROBE_LEVELS, **PROBE_DIMS)
    caps = head.capabilities
    flags: dict[str, Any] = {f.name: getattr(caps, f.name) for f in fields(caps) if f.name != "explanations"}
    flags["explanations"] = sorted(caps.explanations)
    return {"name": name, "capabilities": flags,
            "description": HEAD_SUMMARIES.get(name) or _module_summary(type(head))}


def preset_info(preset: Any) -> dict[str, Any]:
    """A preset as JSON, with its sample rate and the token levels its encoder declares (`AudioLevels`):
    `levels` names every level, `tha_levels` those THA aligns by default and `text_blocks_12` the text
    blocks they meet in a 12-block text encoder."""
    from hade.models.encoders.audio import audio_encoder_config, audio_levels

    config = audio_encoder_config(preset.name)
    levels = audio_levels(config)
    return {**preset.to_dict(), "sample_rate": config.sample_rate, "levels": list(levels.names),
            "tha_levels": [levels.names[i - 1] for i in levels.aligned], "text_blocks_12": list(levels.text_blocks_12)}


def list_models() -> dict[str, list[dict[str, Any]]]:
    """Every head, audio encoder preset and text encoder, as JSON-ready dicts."""
    from hade.apps.choices import head_names
    from hade.models.presets import all_presets

    return {"heads": [head_info(n) for n in head_names()],
            "audio_encoders": [preset_info(p) for _, p in sorted(all_presets().items())],
            "text_encoders": [{"name": n, "description": d} for n, d in TEXT_ENCODERS.items()]}


def _capability_words(caps: dict[str, Any]) -> str:
    words = [name for name, on in caps.items() if on is True]
    words += [f"explains {e}" for e in caps["explanations"]]
    return ", ".join(words) or "-"


def format_models(models: dict[str, list[dict[str, Any]]]) -> str:
    """The listing as aligned text, one section per kind."""
    heads, presets = models["heads"], models["audio_encoders"]
    w = max(len(h["name"]) for h in heads + presets) + 2
    caps = [_capability_words(h["capabilities"]) for h in heads]
    cw = max(map(len, caps)) + 2
    lines = ["heads (--head NAME):"]
    lines += [f"  {h['name']:<{w}}{c:<{cw}}{h['description']}" for h, c in zip(heads, caps)]
    lines += ["", "audio encoder presets (--audio-encoder NAME; add JSON files in a folder named by HADE_PRESET_PATH):"]
    for p in presets:
        where = "" if p["source"].startswith(_builtin_prefix()) else f"  [{p['source']}]"
        rate = p["sample_rate"] / 1000
        pairs = ", ".join(f"{a}<->text {b}" for a, b in zip(p["tha_levels"], p["text_blocks_12"]))
        lines.append(f"  {p['name']:<{w}}{p['encoder']:<6}{rate:>4g} kHz  {p['description']}{where}")
        lines.append(f"  {'':<{w}}levels: {', '.join(p['levels'])}; THA: {pairs} (12-block text)")
    lines += ["", "text encoders (--text-encoder NAME or DIR):"]
    lines += [f"  {t['name']:<{w}}{t['description']}" for t in models["text_encoders"]]
    return "\n".join(lines)


def _builtin_prefix() -> str:
    from hade.models.presets import BUILTIN_DIR

    return str(BUILTIN_DIR)


def run(args: argparse.Namespace) -> int:
    """Print the listing (text or --json)."""
    models = list_models()
    print(json.dumps(models, indent=2) if args.json else format_models(models))
    return 0
