"""What "Why?" shows (GET /explain): the query it explains and the JSON pieces of an explanation.

`SearchService.explain` (hade.serve.service) resolves the query and runs the model; this module holds the
query record and turns the scores and `hade.explain.Explanation` into the page's payload.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ExplainQuery:
    """The query whose results "Why?" explains: a text, an audio upload (the `query_id` its search
    returned) or an indexed window ("Similar sounds"); exactly one is set."""

    text: str | None = None
    audio_id: str | None = None
    like_id: int | None = None


def explain_note(kind: str, maps: bool, model: Any) -> str | None:
    """What the explanation cannot show, in words for the page (None when it shows everything)."""
    if kind != "text":
        return ("An audio query is ranked by the cosine between its audio vector and each window's; "
                f"the head ({getattr(model.config, 'head', '?')}) compares audio with text only, so there are no "
                "word × time maps: shown is the similarity of the query to every window of this file.")
    if not maps:
        return (f"This model's head ({getattr(model.config, 'head', '?')}) has no word × time map or factor weights "
                "to show: shown is the similarity of the query to every window of this file.")
    return None


def maps_payload(expl: Any, offset: float) -> dict[str, Any]:
    """The THA levels (times shifted by the window's `offset` into file seconds) and factor weights."""
    levels = [{
        "level": lv.level, "audio_stage": lv.audio_stage, "text_block": lv.text_block,
        "audio_name": lv.audio_name, "text_name": lv.text_name,
        "text_to_audio": lv.text_to_audio, "audio_to_text": lv.audio_to_text,
        "time_edges": np.asarray(lv.time_edges, dtype=np.float64) + offset,
        "bin_tokens": lv.bin_tokens, "text_enhanced": lv.text_enhanced, "audio_enhanced": lv.audio_enhanced,
        "level_score": lv.text_enhanced + lv.audio_enhanced,
    } for lv in expl.levels or []]
    return {"score": expl.score, "clip_seconds": expl.clip_seconds, "audio_seconds": expl.audio_seconds,
            "audio_end": offset + expl.audio_seconds, "words": expl.words or [], "pieces": expl.pieces or [],
            "levels": levels, "tha_score": expl.tha_score, "tha_scale": expl.tha_scale,
            "factor_similarity": expl.factor_similarity, "confidence": expl.confidence,
            "factor_contribution": expl.factor_contribution, "dcr_score": expl.dcr_score}
