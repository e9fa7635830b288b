"""The status behind GET /health: the index's cheap check, the model's fingerprint, and the body.

Nothing here takes the model lock: /health must answer at once, even while a long audio query runs.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import torch

from hade.index.info import IndexInfo
from hade.index.integrity import Health, Problem
from hade.serve.limits import MAX_K, MAX_QUERY_CHARS
from hade.utils.jsonable import jsonable

log = logging.getLogger("hade.serve")


def model_fingerprint(model: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) of the model's config and weights."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        try:
            from hade.config import to_dict

            h.update(json.dumps(to_dict(config), sort_keys=True, default=str).encode())
        except Exception:
            h.update(repr(config).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def index_health(index: Any) -> Health:
    """`index.health()` (a cheap stat-only check); never raises: a failing check reads as degraded."""
    try:
        result = index.health()
        if not isinstance(result, Health):
            raise TypeError(f"index.health() returned {type(result).__name__}, not hade.index.integrity.Health")
    except Exception as exc:  # noqa: BLE001 - the contract says it never raises; /health must answer anyway
        log.warning("index.health() failed: %s", exc)
        return Health((Problem("", "the index check failed", "db"),))
    return result


def health_body(index: Any, info: IndexInfo | None, fingerprint: str, max_upload_bytes: int) -> dict[str, Any]:
    """The JSON of GET /health: status "ok", or "degraded" with the problems and the repair command when a
    file of the index is damaged (then `error` holds a one-line summary); no server paths. `info` None:
    the index could not describe itself (the counts it knows are still given)."""
    model = index.model
    check = index_health(index)
    described = info.to_dict() if info is not None else {}
    body: dict[str, Any] = {
        "status": check.status, "windows": len(index),
        "files": info.files if info is not None else None,
        "head": getattr(getattr(model, "config", None), "head", None),
        "sample_rate": int(model.sample_rate),
        "model_fingerprint": fingerprint,
        "max_upload_bytes": max_upload_bytes, "max_query_chars": MAX_QUERY_CHARS, "max_k": MAX_K,
        "index": {k: v for k, v in described.items() if k not in ("path", "root")},  # no server paths
    }
    if not check.ok:
        body.update(problems=check.to_dict()["problems"], repair=check.repair, error=check.summary())
    return jsonable(body)
