"""hade: audio-text retrieval with two-stream Transformers (HTSAT + BERT) and hierarchical alignment."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hade.utils.offline import force_offline

__version__ = "0.1.0"

# Before anything can import transformers: hade never downloads (see hade.utils.offline for why).
force_offline()

if TYPE_CHECKING:
    from hade.config import ModelConfig, TrainConfig
    from hade.models.retrieval import RetrievalModel


def create_model(config: "ModelConfig") -> "RetrievalModel":
    """Build a model from a ModelConfig (see hade.config)."""
    from hade.models.factory import create_model as _create

    return _create(config)


def load(path: Any, device: Any = "cpu", compute: str = "fp32") -> "RetrievalModel":
    """Load a checkpoint directory written by `hade train` or `hade convert` (safetensors; no code is
    unpickled), in eval mode; `compute` is the encoders' inference autocast (fp32, bf16, or fp16 on CUDA).

    A missing, truncated or corrupt file of the checkpoint raises hade.errors.InputError naming it."""
    from hade.checkpoint import load as _load

    return _load(path, device, compute=compute)


def __getattr__(name: str) -> Any:
    if name in ("ModelConfig", "TrainConfig"):
        from hade import config

        return getattr(config, name)
    if name == "Index":
        from hade.index import Index

        return Index
    raise AttributeError(name)
